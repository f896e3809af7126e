"""Manufacture the bad inputs of the reliability matrix (docs/reliability.md).

Every builder writes tiny files (a few KB) into a given folder, so the matrix runs in seconds.
`MATRIX` lists every row (bad input x command); tests/test_bad_inputs.py runs each row as a
subprocess, and `python -m tests.badfiles --markdown` prints the table of the messages the
user actually sees, for docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.labels import AMOS_DATASET_LABELS

REPO = Path(__file__).resolve().parents[1]
SHAPE = (24, 24, 6)  # X, Y, Z of the tiny synthetic scans
SIZE = 16  # slice-store size used by the matrix (keeps prepare/train instant)
GOOD_IDS = ("amos_0001", "amos_0002", "amos_0003", "amos_0004", "amos_0005")
BAD_ID = "amos_0099"
TRAIN_FAST = ("--epochs", "1", "--workers", "0", "--device", "cpu", "--seed", "0")


# --- single files -------------------------------------------------------------------------


def affine(spacing: float = 1.5) -> np.ndarray:
    a = np.diag([spacing, spacing, 3.0, 1.0])
    a[:3, 3] = (-10.0, -20.0, 30.0)
    return a


def write_nifti(path: Path, data: np.ndarray, aff: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine() if aff is None else aff)
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))
    return path


def good_image(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 400, size=shape).astype(np.int16)


def good_label(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """A couple of box 'organs' in every slice so prepare's organ filter keeps slices."""
    lab = np.zeros(shape, dtype=np.uint8)
    x, y = shape[0], shape[1]
    lab[x // 4 : x // 2, y // 4 : y // 2] = 1 + seed % 15
    lab[x // 2 : 3 * x // 4, y // 2 : 3 * y // 4] = 6
    return lab


def good_pair(
    folder: Path, case_id: str, seed: int = 0, shape: tuple[int, ...] = SHAPE
) -> tuple[Path, Path]:
    image = write_nifti(folder / "imagesTr" / f"{case_id}.nii.gz", good_image(seed, shape))
    label = write_nifti(folder / "labelsTr" / f"{case_id}.nii.gz", good_label(seed, shape))
    return image, label


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def make_truncated(path: Path, label: bool = False) -> Path:
    write_nifti(path, good_label() if label else good_image())
    return truncate(path, 0.6)


def make_zero_byte(path: Path, label: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_text(path: Path, label: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not an image, just a note someone saved as .nii.gz\n" * 20)
    return path


def make_2d(path: Path, label: bool = False) -> Path:
    return write_nifti(path, (good_label() if label else good_image())[:, :, 0])


def make_4d(path: Path, label: bool = False) -> Path:
    vol = good_label() if label else good_image()
    return write_nifti(path, np.stack([vol, vol], axis=3))


def make_nan_image(path: Path, label: bool = False) -> Path:
    data = good_image().astype(np.float32)
    data[3, 4, 2] = np.nan
    data[5, 6, 1] = np.inf
    return write_nifti(path, data)


def make_label_over_15(path: Path, label: bool = True) -> Path:
    lab = good_label().astype(np.uint16)
    lab[1, 1, 1] = 16
    lab[2, 2, 2] = 200
    return write_nifti(path, lab)


def make_negative_label(path: Path, label: bool = True) -> Path:
    lab = good_label().astype(np.int16)
    lab[1, 1, 1] = -1
    return write_nifti(path, lab)


def make_float_label(path: Path, label: bool = True) -> Path:
    lab = good_label().astype(np.float32)
    lab[1, 1, 1] = 2.5
    return write_nifti(path, lab)


def make_shape_mismatch(path: Path, label: bool = False) -> Path:
    """A volume one slice shorter than its partner."""
    vol = good_label() if label else good_image()
    return write_nifti(path, vol[:, :, :-1])


def make_affine_mismatch(path: Path, label: bool = False) -> Path:
    """Same shape, but the grid is shifted by 5 mm (label drawn on another scan)."""
    a = affine()
    a[0, 3] += 5.0
    return write_nifti(path, good_label() if label else good_image(), a)


# name -> (builder, which file of a case it corrupts)
BAD_NIFTI: dict[str, tuple[Callable[..., Path], str]] = {
    "truncated .nii.gz": (make_truncated, "label"),
    "zero-byte file": (make_zero_byte, "image"),
    "text file named .nii.gz": (make_text, "image"),
    "image/label shape mismatch": (make_shape_mismatch, "image"),
    "image/label affine mismatch": (make_affine_mismatch, "label"),
    "label ids > 15": (make_label_over_15, "label"),
    "negative labels": (make_negative_label, "label"),
    "float labels": (make_float_label, "label"),
    "NaN/Inf voxels": (make_nan_image, "image"),
    "2D NIfTI": (make_2d, "image"),
    "4D NIfTI": (make_4d, "image"),
}


# --- folders ------------------------------------------------------------------------------


def amos_root(
    folder: Path,
    ids: tuple[str, ...] = GOOD_IDS,
    extra: tuple[str, ...] = (),
    shape: tuple[int, ...] = SHAPE,
) -> Path:
    """An AMOS22-layout folder of tiny good cases with a dataset.json listing `ids + extra`."""
    for n, case_id in enumerate(ids):
        good_pair(folder, case_id, seed=n, shape=shape)
    entries = [
        {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
        for c in (*ids, *extra)
    ]
    spec = {"name": "AMOS", "labels": dict(AMOS_DATASET_LABELS), "training": entries}
    (folder / "dataset.json").write_text(json.dumps(spec, indent=1))
    return folder


def amos_root_with_bad(folder: Path, bad: str) -> Path:
    """Good cases plus one case (BAD_ID) whose image or label is the named bad file."""
    builder, which = BAD_NIFTI[bad]
    amos_root(folder, extra=(BAD_ID,))
    image, label = good_pair(folder, BAD_ID, seed=9)
    target = label if which == "label" else image
    target.unlink()
    builder(target, label=which == "label")
    return target


def nnunet_root(folder: Path, ids: tuple[str, ...] = GOOD_IDS, **spec_fields) -> Path:
    """An nnU-Net v2 raw dataset of tiny good cases (imagesTr/<id>_0000.nii.gz, labelsTr)."""
    for n, case_id in enumerate(ids):
        write_nifti(folder / "imagesTr" / f"{case_id}_0000.nii.gz", good_image(n))
        write_nifti(folder / "labelsTr" / f"{case_id}.nii.gz", good_label(n))
    spec = {
        "channel_names": {"0": "CT"},
        "labels": {name: int(i) for i, name in AMOS_DATASET_LABELS.items()},
        "numTraining": len(ids),
        "file_ending": ".nii.gz",
        **spec_fields,
    }
    (folder / "dataset.json").write_text(json.dumps(spec, indent=1))
    return folder


def amos_root_listing(folder: Path, **changes) -> Path:
    """`amos_root` whose dataset.json gets `changes` (entries, labels, modality, ...)."""
    amos_root(folder)
    listing = folder / "dataset.json"
    listing.write_text(json.dumps({**json.loads(listing.read_text()), **changes}))
    return listing


def _entries(*names: str, **extra) -> list[dict[str, str]]:
    return [{"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}", **extra} for n in names]


def unwritable_dir(folder: Path) -> Path:
    """An output path nobody can create, even root: its parent is a regular file."""
    blocker = folder / "not_a_folder"
    blocker.write_text("a file where a folder is expected\n")
    return blocker / "out"


def can_mount_tmpfs() -> bool:
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as probe:
        ok = _run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe]).returncode == 0
        if ok:
            _run(["umount", probe])
        return ok


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "48k", readonly: bool = False) -> Iterator[Path]:
    """A real small filesystem (disk full for real) or a read-only one; root on Linux only."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if readonly else "")
    res = _run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)])
    if res.returncode != 0:
        raise RuntimeError(f"mount failed: {res.stderr}")
    try:
        yield folder
    finally:
        _run(["umount", "-l", str(folder)])


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- running the CLI ----------------------------------------------------------------------


def amoseg(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "amoseg", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=timeout,
    )


def amoseg_inprocess(*args: str | Path) -> subprocess.CompletedProcess:
    """Same as `amoseg(...)` through the same entry point (amoseg.cli.main.main), but in this
    process: ~50x faster than a fresh interpreter, so the whole matrix fits the test budget.
    An exception escaping main() is rendered as the traceback the user would see."""
    import io
    import traceback

    from amoseg.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc(file=err)
            code = 1
    code = code if isinstance(code, int) else (0 if code is None else 1)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def leftovers(folder: Path | None) -> list[Path]:
    """Temp files/folders that a crashed or failed write left behind."""
    if folder is None or not folder.exists():
        return []
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


# --- the matrix ---------------------------------------------------------------------------


class NotHere(Exception):
    """This row cannot run on this machine (e.g. mounting a tmpfs needs root on Linux)."""


@dataclass
class Case:
    """One run of the CLI that must fail cleanly."""

    argv: list[str]
    names: str  # text the error line must contain (the offending file or folder)
    out: Path | None = None  # where a partial output must not be left
    cleanup: Callable[[], None] | None = None  # e.g. unmount a tmpfs after the run


class Fixtures:
    """Expensive shared inputs (a prepared store, a trained run), built once, lazily."""

    def __init__(self, base: Path):
        self.base = base
        self._store: Path | None = None
        self._run: Path | None = None

    def store(self) -> Path:
        if self._store is None:
            root = amos_root(self.base / "good_root")
            store = self.base / "good_store"
            res = amoseg_inprocess("prepare", root, store, "--size", SIZE, "--quiet")
            if res.returncode != 0:
                raise RuntimeError(f"prepare failed on good data:\n{res.stderr}")
            self._store = store
        return self._store

    def run(self) -> Path:
        if self._run is None:
            run = self.base / "good_run"
            res = amoseg_inprocess(
                "train", "prior", "--data", self.store(), "--out", run, *TRAIN_FAST
            )
            if res.returncode != 0:
                raise RuntimeError(f"train failed on good data:\n{res.stderr}")
            self._run = run
        return self._run


def _prepare_bad(bad: str) -> Callable[[Path, Fixtures], Case]:
    def build(tmp: Path, fx: Fixtures) -> Case:
        target = amos_root_with_bad(tmp / "root", bad)
        out = tmp / "store"
        return Case(["prepare", str(tmp / "root"), str(out), "--size", str(SIZE)], target.name, out)

    return build


def _prepare_missing(tmp: Path, fx: Fixtures) -> Case:
    amos_root(tmp / "root", extra=(BAD_ID,))
    out = tmp / "store"
    return Case(["prepare", str(tmp / "root"), str(out)], f"{BAD_ID}.nii.gz", out)


def _prepare_empty(tmp: Path, fx: Fixtures) -> Case:
    (tmp / "empty").mkdir()
    out = tmp / "store"
    return Case(["prepare", str(tmp / "empty"), str(out)], "empty", out)


def _prepare_unwritable(tmp: Path, fx: Fixtures) -> Case:
    root = amos_root(tmp / "root")
    out = unwritable_dir(tmp)
    return Case(["prepare", str(root), str(out), "--size", str(SIZE)], "not_a_folder", None)


def _prepare_listing(**changes) -> Callable[[Path, Fixtures], Case]:
    """prepare on an AMOS root whose dataset.json carries `changes`; the line names it."""

    def build(tmp: Path, fx: Fixtures) -> Case:
        listing = amos_root_listing(tmp / "root", **changes)
        out = tmp / "store"
        return Case(
            ["prepare", str(tmp / "root"), str(out), "--size", str(SIZE)], listing.name, out
        )

    return build


def _prepare_dot_id(tmp: Path, fx: Fixtures) -> Case:
    good_pair(tmp / "root", ".", seed=7)  # imagesTr/..nii.gz
    return _prepare_listing(training=_entries("amos_0001.nii.gz", "..nii.gz"))(tmp, fx)


def _prepare_dangling_symlink(tmp: Path, fx: Fixtures) -> Case:
    """A link to a file that is gone (links leading out of the folder are followed)."""
    good_pair(tmp / "root", "amos_0009")
    link = tmp / "root" / "imagesTr" / "amos_0009.nii.gz"
    link.unlink()
    link.symlink_to(tmp / "elsewhere" / "moved_away.nii.gz")
    case = _prepare_listing(training=_entries("amos_0001.nii.gz", "amos_0009.nii.gz"))(tmp, fx)
    case.names = "amos_0009.nii.gz"
    return case


def _prepare_document(text: str | None, sparse_bytes: int = 0) -> Callable[[Path, Fixtures], Case]:
    """prepare on a root whose dataset.json is `text` (or a sparse file of that many bytes)."""

    def build(tmp: Path, fx: Fixtures) -> Case:
        root = amos_root(tmp / "root")
        with (root / "dataset.json").open("w") as fh:
            fh.write(text or "{")
            if sparse_bytes:
                fh.truncate(sparse_bytes)
        out = tmp / "store"
        return Case(["prepare", str(root), str(out), "--size", str(SIZE)], "dataset.json", out)

    return build


def _prepare_undeclared_label(tmp: Path, fx: Fixtures) -> Case:
    """dataset.json declares a renumbered set without the file's id 6."""
    _prepare_listing(labels={"0": "background", "1": "spleen", "2": "liver"})(tmp, fx)
    out = tmp / "store"
    argv = ["prepare", str(tmp / "root"), str(out), "--size", str(SIZE)]
    return Case(argv, f"labelsTr/{GOOD_IDS[0]}.nii.gz", out)


def _prepare_nnunet(change: Callable[[Path], None]) -> Callable[[Path, Fixtures], Case]:
    def build(tmp: Path, fx: Fixtures) -> Case:
        root = nnunet_root(tmp / "Dataset900_Bad")
        names = change(root) or "dataset.json"
        out = tmp / "store"
        return Case(["prepare", str(root), str(out), "--size", str(SIZE)], names, out)

    return build


def _nnunet_two_channels(root: Path) -> str:
    first = root / "imagesTr" / f"{GOOD_IDS[0]}_0000.nii.gz"
    shutil.copy(first, first.with_name(f"{GOOD_IDS[0]}_0001.nii.gz"))
    return f"{GOOD_IDS[0]}_0001.nii.gz"


def _nnunet_missing_label(root: Path) -> str:
    (root / "labelsTr" / f"{GOOD_IDS[1]}.nii.gz").unlink()
    return f"labelsTr/{GOOD_IDS[1]}.nii.gz"


def _nnunet_count(root: Path) -> None:
    spec = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**spec, "numTraining": 9}))


def _score_bad(bad: str) -> Callable[[Path, Fixtures], Case]:
    """PRED holds one bad prediction; GT is good (or the GT side is bad for label rows)."""

    def build(tmp: Path, fx: Fixtures) -> Case:
        builder, _which = BAD_NIFTI[bad]
        pred, gt = tmp / "pred", tmp / "gt"
        for n, case_id in enumerate(GOOD_IDS[:2]):
            write_nifti(pred / f"{case_id}.nii.gz", good_label(n))
            write_nifti(gt / f"{case_id}.nii.gz", good_label(n))
        target = pred / f"{GOOD_IDS[1]}.nii.gz"
        target.unlink()
        builder(target, label=True)
        return Case(["score", str(pred), str(gt)], target.name, None)

    return build


def _score_missing(tmp: Path, fx: Fixtures) -> Case:
    pred, gt = tmp / "pred", tmp / "gt"
    for n, case_id in enumerate(GOOD_IDS[:2]):
        write_nifti(gt / f"{case_id}.nii.gz", good_label(n))
    write_nifti(pred / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    return Case(["score", str(pred), str(gt)], GOOD_IDS[1], None)


def _score_empty(tmp: Path, fx: Fixtures) -> Case:
    (tmp / "pred").mkdir()
    write_nifti(tmp / "gt" / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    return Case(["score", str(tmp / "pred"), str(tmp / "gt")], "pred", None)


def _predict_bad(bad: str) -> Callable[[Path, Fixtures], Case]:
    def build(tmp: Path, fx: Fixtures) -> Case:
        builder, _which = BAD_NIFTI[bad]
        scan = builder(tmp / "scan.nii.gz", label=False)
        out = tmp / "out"
        return Case(["predict", str(fx.run()), str(scan), "-o", str(out)], scan.name, out)

    return build


def _predict_missing(tmp: Path, fx: Fixtures) -> Case:
    out = tmp / "out"
    return Case(["predict", str(fx.run()), str(tmp / "nope.nii.gz"), "-o", str(out)], "nope", out)


def _predict_empty(tmp: Path, fx: Fixtures) -> Case:
    (tmp / "dicom").mkdir()
    out = tmp / "out"
    return Case(["predict", str(fx.run()), str(tmp / "dicom"), "-o", str(out)], "dicom", out)


def _predict_non_image(tmp: Path, fx: Fixtures) -> Case:
    scan = tmp / "notes.txt"
    scan.write_text("not an image\n")
    out = tmp / "out"
    return Case(["predict", str(fx.run()), str(scan), "-o", str(out)], "notes.txt", out)


def _predict_unwritable(tmp: Path, fx: Fixtures) -> Case:
    scan = write_nifti(tmp / "scan.nii.gz", good_image())
    out = unwritable_dir(tmp)
    return Case(["predict", str(fx.run()), str(scan), "-o", str(out)], "not_a_folder", None)


def _predict_no_checkpoint(tmp: Path, fx: Fixtures) -> Case:
    run = tmp / "run"
    run.mkdir()
    scan = write_nifti(tmp / "scan.nii.gz", good_image())
    out = tmp / "out"
    return Case(["predict", str(run), str(scan), "-o", str(out)], "run", out)


REALDATA = REPO.parent / "shared" / "realdata"


def _predict_torn_dicom(tmp: Path, fx: Fixtures) -> Case:
    """A real 3-slice DICOM series whose middle file was cut short (interrupted copy)."""
    source = REALDATA / "example_ct" / "dicom"
    if not source.is_dir():
        raise NotHere(f"real DICOM samples not found at {source}")
    series = tmp / "series"
    series.mkdir()
    for n, src in enumerate(sorted(source.iterdir())[:3]):
        data = src.read_bytes()
        (series / src.name).write_bytes(data[: len(data) // 2] if n == 1 else data)
    out = tmp / "out"
    return Case(["predict", str(fx.run()), str(series), "-o", str(out)], "series", out)


def _predict_sheared_dicom(tmp: Path, fx: Fixtures) -> Case:
    """A series whose slice origins wander sideways unevenly: no single gantry tilt."""
    from tests.dicom_series import tilted_positions, write_series

    positions = tilted_positions(6, 10.0)
    positions[3, 1] += 3.0
    write_series(tmp / "series", good_image(shape=(24, 24, 6)), positions)
    out = tmp / "out"
    return Case(["predict", str(fx.run()), str(tmp / "series"), "-o", str(out)], "series", out)


def _dicom_series(folder: Path, **kwargs) -> list[Path]:
    from tests.dicom_series import tilted_positions, write_series

    tilt = kwargs.pop("tilt", 0.0)
    return write_series(folder, good_image(shape=(24, 24, 6)), tilted_positions(6, tilt), **kwargs)


def _predict_dicom(
    make: Callable[[Path], Path], *extra: str, names: str = "series"
) -> Callable[[Path, Fixtures], Case]:
    """A predict row on the DICOM input `make(tmp)` builds, with extra options."""

    def build(tmp: Path, fx: Fixtures) -> Case:
        scan = make(tmp)
        out = tmp / "out"
        return Case(["predict", str(fx.run()), str(scan), "-o", str(out), *extra], names, out)

    return build


def _no_pixel_spacing(tmp: Path) -> Path:
    from tests.dicom_series import edit_series

    edit_series(_dicom_series(tmp / "series"), PixelSpacing=None)
    return tmp / "series"


def _sheared_orientation(tmp: Path) -> Path:
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    _dicom_series(tmp / "series", orientation=(1.0, 0.0, 0.0, s, c, 0.0))
    return tmp / "series"


def _tilted_series(tmp: Path) -> Path:
    _dicom_series(tmp / "series", tilt=15.0)
    return tmp / "series"


def _two_ct_series(tmp: Path) -> Path:
    _dicom_series(tmp / "series" / "study" / "a")
    _dicom_series(tmp / "series" / "study" / "b")
    return tmp / "series"


def _zip_bomb_header(tmp: Path) -> Path:
    """A .zip whose three members declare ~4 GiB each (the sizes patched in the headers)."""
    import struct
    import zipfile

    path = tmp / "series.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name in ("a.dcm", "b.dcm", "c.dcm"):
            zf.writestr(name, b"x" * 16)
    data = bytearray(path.read_bytes())
    huge = struct.pack("<I", 0xFFFFFF00)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := data.find(signature, start)) >= 0:
            data[start + offset : start + offset + 4] = huge
            start += 4
    path.write_bytes(bytes(data))
    return path


def _damaged_zip(tmp: Path) -> Path:
    path = tmp / "series.zip"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    return path


def _second_channel(tmp: Path) -> Path:
    for channel in ("0000", "0001"):
        write_nifti(tmp / "imagesTs" / f"amos_0001_{channel}.nii.gz", good_image())
    return tmp / "imagesTs" / "amos_0001_0001.nii.gz"


def _nifti_scan(tmp: Path) -> Path:
    return write_nifti(tmp / "scan.nii.gz", good_image())


def _train_with_store(mutate: Callable[[Path], str]) -> Callable[[Path, Fixtures], Case]:
    """Copy the good store, break it with `mutate` (which returns the file to name), train."""

    def build(tmp: Path, fx: Fixtures) -> Case:
        store = tmp / "store"
        shutil.copytree(fx.store(), store)
        names = mutate(store)
        out = tmp / "run"
        return Case(
            ["train", "prior", "--data", str(store), "--out", str(out), *TRAIN_FAST],
            names,
            out,
        )

    return build


def _leak(store: Path) -> str:
    splits = json.loads((store / "splits.json").read_text())
    splits["test"] = [*splits["test"], splits["train"][0]]
    (store / "splits.json").write_text(json.dumps(splits))
    return "splits.json"


def _no_store(store: Path) -> str:
    (store / "store.json").unlink()
    return "store"


def _broken_store_json(store: Path) -> str:
    truncate(store / "store.json", 0.5)
    return "store.json"


def _truncated_case(store: Path) -> str:
    splits = json.loads((store / "splits.json").read_text())
    case = store / "cases" / splits["train"][0] / "label.npy"
    truncate(case, 0.5)
    return "label.npy"


def _train_unwritable(tmp: Path, fx: Fixtures) -> Case:
    out = unwritable_dir(tmp)
    return Case(
        ["train", "prior", "--data", str(fx.store()), "--out", str(out), *TRAIN_FAST],
        "not_a_folder",
        None,
    )


def _score_unwritable(tmp: Path, fx: Fixtures) -> Case:
    pred, gt = tmp / "pred", tmp / "gt"
    write_nifti(pred / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    write_nifti(gt / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    target = unwritable_dir(tmp) / "report.json"
    return Case(["score", str(pred), str(gt), "--json", str(target)], "not_a_folder", None)


def _full_disk(tmp: Path, free: int) -> tuple[Path, Callable[[], None]]:
    """A mounted tmpfs with about `free` bytes left: later writes hit a real ENOSPC."""
    if not can_mount_tmpfs():
        raise NotHere("needs root and tmpfs (Linux) to make a real full disk")
    disk = tmp / "disk"
    ctx = tiny_tmpfs(disk, size="256k")
    ctx.__enter__()
    with contextlib.suppress(OSError), (disk / ".filler").open("wb") as fh:
        fh.write(b"\0" * (256 * 1024 - free))
    return disk, lambda: ctx.__exit__(None, None, None)


def _readonly_disk(tmp: Path) -> tuple[Path, Callable[[], None]]:
    if not can_mount_tmpfs():
        raise NotHere("needs root and tmpfs (Linux) to mount a read-only folder")
    disk = tmp / "ro"
    ctx = tiny_tmpfs(disk, size="64k", readonly=True)
    ctx.__enter__()
    return disk, lambda: ctx.__exit__(None, None, None)


def _prepare_disk_full(tmp: Path, fx: Fixtures) -> Case:
    root = amos_root(tmp / "root")
    disk, cleanup = _full_disk(tmp, free=12 * 1024)
    out = disk / "store"
    return Case(["prepare", str(root), str(out), "--size", "32"], str(disk), out, cleanup)


def _prepare_readonly(tmp: Path, fx: Fixtures) -> Case:
    root = amos_root(tmp / "root")
    disk, cleanup = _readonly_disk(tmp)
    out = disk / "store"
    return Case(["prepare", str(root), str(out), "--size", str(SIZE)], str(disk), out, cleanup)


def _predict_disk_full(tmp: Path, fx: Fixtures) -> Case:
    scan = write_nifti(tmp / "scan.nii.gz", good_image(shape=(64, 64, 24)))
    run = fx.run()
    disk, cleanup = _full_disk(tmp, free=8 * 1024)
    out = disk / "out"
    return Case(["predict", str(run), str(scan), "-o", str(out)], str(disk), out, cleanup)


def _train_disk_full(tmp: Path, fx: Fixtures) -> Case:
    store = fx.store()
    disk, cleanup = _full_disk(tmp, free=8 * 1024)
    out = disk / "run"
    argv = ["train", "prior", "--data", str(store), "--out", str(out), *TRAIN_FAST]
    return Case(argv, str(disk), out, cleanup)


def _evaluate_leak(tmp: Path, fx: Fixtures) -> Case:
    store = tmp / "store"
    shutil.copytree(fx.store(), store)
    _leak(store)
    return Case(["evaluate", str(fx.run()), "--data", str(store)], "splits.json", None)


def _other_split(store: Path) -> str:
    """The same cases, one training case moved to validation: no leak, another identity."""
    splits = json.loads((store / "splits.json").read_text())
    splits["val"] = [*splits["val"], splits["train"].pop()]
    (store / "splits.json").write_text(json.dumps(splits))
    return "store"


def _evaluate_other_store(tmp: Path, fx: Fixtures) -> Case:
    store = tmp / "store"
    shutil.copytree(fx.store(), store)
    _other_split(store)
    return Case(["evaluate", str(fx.run()), "--data", str(store)], "store", None)


def _resume_other_store(tmp: Path, fx: Fixtures) -> Case:
    run = tmp / "run"
    shutil.copytree(fx.run(), run)
    store = tmp / "store"
    shutil.copytree(fx.store(), store)
    _other_split(store)
    argv = ["train", "prior", "--data", str(store), "--out", str(run), "--resume", *TRAIN_FAST]
    return Case(argv, "store", None)


def _prepare_locked(tmp: Path, fx: Fixtures) -> Case:
    """A second prepare while another process holds the store's writer lock."""
    root = amos_root(tmp / "root")
    out = tmp / "store"
    code = (
        "import pathlib, sys, time\n"
        "from amoseg.store.store import store_lock\n"
        "with store_lock(pathlib.Path(sys.argv[1])):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(300)\n"
    )
    argv = ["prepare", str(root), str(out), "--size", str(SIZE)]
    return Case(argv, "store", None, cleanup=_held_by_another_process(code, out))


def _held_by_another_process(code: str, path: Path) -> Callable[[], None]:
    """Run `code` (which takes `path` as argv[1] and prints 'held' once it holds its lock)
    in another process; returns what ends that process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    if holder.stdout is None or holder.stdout.readline().strip() != "held":
        holder.kill()
        raise RuntimeError("the lock holder did not start")

    def release() -> None:
        holder.kill()
        holder.wait()

    return release


def _prepare_bad_plan(tmp: Path, fx: Fixtures) -> Case:
    """plan.json edited by hand into an invalid value: one line naming the field."""
    root = amos_root(tmp / "root")
    plan = {
        "version": 1,
        "configurations": {
            "2d": {"dims": 2, "spacing": [0.8, -1, 2.5], "patch_size": [32, 32],
                   "batch_size": 2, "network": {"class": "unet"}}
        },
    }  # fmt: skip
    path = tmp / "plan.json"
    path.write_text(json.dumps(plan))
    argv = ["prepare", str(root), str(tmp / "out"), "--plan", str(path), "--configuration", "2d"]
    return Case(argv, "configurations.2d.spacing", tmp / "out")


# --- outputs that already exist, inputs that would be replaced (nothing replaced unless asked)


def _predict_existing_output(tmp: Path, fx: Fixtures) -> Case:
    scan = write_nifti(tmp / "in" / "scan.nii.gz", good_image())
    out = tmp / "out"
    write_nifti(out / "scan_seg.nii.gz", good_label())
    return Case(["predict", str(fx.run()), str(scan), "-o", str(out)], "scan_seg.nii.gz", out)


def _predict_into_input_folder(tmp: Path, fx: Fixtures) -> Case:
    folder = tmp / "case"
    write_nifti(folder / "ct.nii.gz", good_image())
    write_nifti(folder / "ct_seg.nii.gz", good_label())  # the user's own label
    return Case(["predict", str(fx.run()), str(folder), "-o", str(folder)], "ct_seg.nii.gz")


def _score_json_onto_label(tmp: Path, fx: Fixtures) -> Case:
    pred, gt = tmp / "pred", tmp / "gt"
    write_nifti(pred / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    label = write_nifti(gt / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    argv = ["score", str(pred), str(gt), "--json", str(label), "--overwrite"]
    return Case(argv, label.name)


def _train_into_finished_run(tmp: Path, fx: Fixtures) -> Case:
    run = tmp / "run"
    shutil.copytree(fx.run(), run)
    return Case(["train", "prior", "--data", str(fx.store()), "--out", str(run), *TRAIN_FAST],
                "--resume")  # fmt: skip


def _train_into_foreign_folder(tmp: Path, fx: Fixtures) -> Case:
    folder = tmp / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("...")
    argv = ["train", "prior", "--data", str(fx.store()), "--out", str(folder), *TRAIN_FAST,
            "--overwrite"]  # fmt: skip
    return Case(argv, "thesis")


def _export_existing(tmp: Path, fx: Fixtures) -> Case:
    target = tmp / "model.onnx"
    target.write_bytes(b"someone else's model")
    return Case(["export", str(fx.run()), "--onnx", str(target)], "model.onnx")


def _compare_existing(tmp: Path, fx: Fixtures) -> Case:
    out = tmp / "report"
    out.mkdir()
    (out / "comparison.md").write_text("my edited table")
    return Case(["compare", str(fx.run()), "-o", str(out)], "comparison.md")


def _tune_foreign_folder(tmp: Path, fx: Fixtures) -> Case:
    folder = tmp / "data"
    folder.mkdir()
    (folder / "scan.nii.gz").write_bytes(b"")
    argv = ["tune", "logreg-pixel", "--data", str(fx.store()), "--out", str(folder),
            "--trials", "1", "--epochs", "1"]  # fmt: skip
    return Case(argv, "data")


# --- values outside their range, networks too large, damaged checkpoints and studies -----


def _train_option(*extra: str, names: str, model: str = "unet") -> Callable[[Path, Fixtures], Case]:
    def build(tmp: Path, fx: Fixtures) -> Case:
        out = tmp / "run"
        argv = ["train", model, "--data", str(fx.store()), "--out", str(out), *TRAIN_FAST, *extra]
        return Case(argv, names, out)

    return build


def _predict_damaged_checkpoint(tmp: Path, fx: Fixtures) -> Case:
    import torch

    run = tmp / "run"
    run.mkdir()
    ckpt = torch.load(fx.run() / "checkpoint_best.pt", weights_only=True)
    ckpt.pop("state")
    torch.save(ckpt, run / "checkpoint_best.pt")
    scan = write_nifti(tmp / "scan.nii.gz", good_image())
    return Case(["predict", str(run), str(scan), "-o", str(tmp / "out")], "checkpoint_best.pt")


def _tune_corrupt_study(tmp: Path, fx: Fixtures) -> Case:
    out = tmp / "tune"
    out.mkdir()
    (out / "study.db").write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 8)
    argv = ["tune", "logreg-pixel", "--data", str(fx.store()), "--out", str(out),
            "--trials", "1", "--epochs", "1", "--device", "cpu"]  # fmt: skip
    return Case(argv, "study.db")


# --- read-only output folders (issue 27): the folder exists, nothing can be created in it -


def _readonly_predict(tmp: Path, fx: Fixtures) -> Case:
    scan = write_nifti(tmp / "scan.nii.gz", good_image())
    disk, cleanup = _readonly_disk(tmp)
    return Case(["predict", str(fx.run()), str(scan), "-o", str(disk)], str(disk), disk, cleanup)


def _readonly_package(tmp: Path, fx: Fixtures) -> Case:
    disk, cleanup = _readonly_disk(tmp)
    argv = ["export", str(fx.run()), "--package", str(disk / "model.amoseg.zip")]
    return Case(argv, str(disk), disk, cleanup)


def _readonly_view(tmp: Path, fx: Fixtures) -> Case:
    seg = write_nifti(tmp / "seg.nii.gz", good_label())
    disk, cleanup = _readonly_disk(tmp)
    return Case(["view", str(seg), "-o", str(disk / "seg.html")], str(disk), disk, cleanup)


def _readonly_plan(tmp: Path, fx: Fixtures) -> Case:
    root = amos_root(tmp / "root")
    disk, cleanup = _readonly_disk(tmp)
    argv = ["plan", str(root), "-o", str(disk / "plan.json"), "--quiet"]
    return Case(argv, str(disk), disk, cleanup)


def _readonly_score(tmp: Path, fx: Fixtures) -> Case:
    pred, gt = tmp / "pred", tmp / "gt"
    write_nifti(pred / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    write_nifti(gt / f"{GOOD_IDS[0]}.nii.gz", good_label(0))
    disk, cleanup = _readonly_disk(tmp)
    argv = ["score", str(pred), str(gt), "--json", str(disk / "report.json")]
    return Case(argv, str(disk), disk, cleanup)


# --- damaged postprocessing.json (issue 27): refused before any scan is segmented --------


def _predict_postprocessing(doc: str) -> Callable[[Path, Fixtures], Case]:
    def build(tmp: Path, fx: Fixtures) -> Case:
        run = tmp / "run"
        shutil.copytree(fx.run(), run)
        (run / "postprocessing.json").write_text(doc)
        scan = write_nifti(tmp / "scan.nii.gz", good_image())
        out = tmp / "out"
        return Case(["predict", str(run), str(scan), "-o", str(out)], "postprocessing.json", out)

    return build


# --- plan.json values (issue 27): every field checked where the file is read -------------


def _good_plan_config() -> dict:
    return {"dims": 2, "spacing": [1.5, 1.5, 3.0], "patch_size": [16, 16], "batch_size": 2,
            "network": {"class": "unet", "args": {"base": 8, "depth": 2}}}  # fmt: skip


def _prepare_plan(names: str, **changes) -> Callable[[Path, Fixtures], Case]:
    """prepare --plan with one field of a valid plan edited (None: the key removed)."""

    def build(tmp: Path, fx: Fixtures) -> Case:
        root = amos_root(tmp / "root")
        config = _good_plan_config()
        plan: dict = {"version": 1, "median_spacing": [1.5, 1.5, 3.0]}
        for key, value in changes.items():
            (plan if key in ("median_spacing", "version", "dataset") else config)[key] = value
        plan["configurations"] = {"2d": config}
        path = tmp / "plan.json"
        path.write_text(json.dumps(plan))
        out = tmp / "out"
        argv = ["prepare", str(root), str(out), "--plan", str(path), "--configuration", "2d",
                "--quiet"]  # fmt: skip
        return Case(argv, names, out)

    return build


def _plan_memory(value: str) -> Callable[[Path, Fixtures], Case]:
    def build(tmp: Path, fx: Fixtures) -> Case:
        root = amos_root(tmp / "root")
        argv = ["plan", str(root), "-o", str(tmp / "plan.json"), "--memory-gb", value, "--quiet"]
        return Case(argv, "--memory-gb", tmp)

    return build


# --- evaluate: packages need -o; ensembles get a single run's store and split checks ----


def _package(tmp: Path, fx: Fixtures) -> Path:
    package = tmp / "model.amoseg.zip"
    res = amoseg_inprocess("export", fx.run(), "--package", package)
    if res.returncode != 0:
        raise RuntimeError(f"export --package failed on a good run:\n{res.stderr}")
    return package


def _evaluate_package(*, alone: bool) -> Callable[[Path, Fixtures], Case]:
    def build(tmp: Path, fx: Fixtures) -> Case:
        argv = ["evaluate", str(_package(tmp, fx)), "--data", str(fx.store())]
        if not alone:
            argv.insert(2, str(fx.run()))
        return Case(argv, "-o FOLDER", None)

    return build


def _hostile_package(
    change: Callable[[str, bytes], bytes | None], extra: dict[str, bytes] | None = None
):
    """predict with the good run's package, one entry rewritten (`change`) or added."""

    def build(tmp: Path, fx: Fixtures) -> Case:
        package = _package(tmp, fx)
        bad = tmp / "bad.amoseg.zip"
        with zipfile.ZipFile(package) as zin, zipfile.ZipFile(bad, "w") as zout:
            for info in zin.infolist():
                data = change(info.filename, zin.read(info))
                if data is not None:
                    zout.writestr(info.filename, data)
            for name, data in (extra or {}).items():
                zout.writestr(name, data)
        scan = write_nifti(tmp / "scan.nii.gz", good_image())
        return Case(["predict", str(bad), str(scan), "-o", str(tmp / "out")], "bad.amoseg.zip",
                    tmp / "out")  # fmt: skip

    return build


def _manifest(**fields: object) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name == "amoseg-package.json":
            return json.dumps({**json.loads(data), **fields}).encode()
        return data

    return change


def _entry(entry: str, new: bytes) -> Callable[[str, bytes], bytes]:
    return lambda name, data: new if name == entry else data


def _checkpoint(**fields: object) -> Callable[[str, bytes], bytes]:
    def change(name: str, data: bytes) -> bytes:
        if name != "members/0/checkpoint.pt":
            return data
        import io

        import torch

        ckpt = torch.load(io.BytesIO(data), weights_only=True)
        buffer = io.BytesIO()
        torch.save({**ckpt, **fields}, buffer)
        return buffer.getvalue()

    return change


def _fold_runs(tmp: Path, fx: Fixtures, folds: tuple[int | None, ...]) -> list[Path]:
    """Copies of the good run, each recorded as trained on one cross-validation fold."""
    runs = []
    for n, fold in enumerate(folds):
        run = tmp / "runs" / f"fold_{n}"
        shutil.copytree(fx.run(), run)
        config = json.loads((run / "config.json").read_text())
        config["settings"]["fold"] = fold
        (run / "config.json").write_text(json.dumps(config))
        runs.append(run)
    return runs


def _evaluate_ensemble_other_store(tmp: Path, fx: Fixtures) -> Case:
    runs = _fold_runs(tmp, fx, (None, None))
    store = tmp / "store"
    shutil.copytree(fx.store(), store)
    _other_split(store)
    argv = ["evaluate", *map(str, runs), "--data", str(store), "-o", str(tmp / "eval")]
    return Case(argv, "store", tmp / "eval")


def _evaluate_fold_ensemble_val(tmp: Path, fx: Fixtures) -> Case:
    _fold_runs(tmp, fx, (0, 1))
    argv = ["evaluate", str(tmp / "runs"), "--split", "val", "--data", str(fx.store())]
    return Case(argv, "trained on", tmp / "runs")


# --- lost work and races (issue 27) -------------------------------------------------------


def _predict_folder_in_use(tmp: Path, fx: Fixtures) -> Case:
    """A second predict while another one is writing into the same -o folder."""
    scan = write_nifti(tmp / "scan.nii.gz", good_image())
    out = tmp / "out"
    code = (
        "import sys, time\n"
        "from amoseg.outputs import claim_output_folder\n"
        "claim_output_folder(sys.argv[1])\n"
        "print('held', flush=True)\n"
        "time.sleep(300)\n"
    )
    argv = ["predict", str(fx.run()), str(scan), "-o", str(out)]
    return Case(argv, "another amoseg predict", out, cleanup=_held_by_another_process(code, out))


# (input, command) -> builder.  Order = order of the table in docs/reliability.md.
def _view_other_grid(tmp: Path, fx: Fixtures) -> Case:
    """The scan's shape but not its place: the same voxels under an x-mirrored affine."""
    seg = write_nifti(tmp / "scan_seg.nii.gz", good_label())
    image = write_nifti(tmp / "scan.nii.gz", good_image(), affine() @ np.diag([-1.0, 1, 1, 1]))
    return Case(["view", str(seg), str(image), "-o", str(tmp / "v.html")], "scan.nii.gz")


MATRIX: dict[tuple[str, str], Callable[[Path, Fixtures], Case]] = {}
for _bad in BAD_NIFTI:
    MATRIX[(_bad, "prepare")] = _prepare_bad(_bad)
MATRIX[("dataset.json entry without its file", "prepare")] = _prepare_missing
MATRIX[("empty folder", "prepare")] = _prepare_empty
MATRIX[("unwritable output folder", "prepare")] = _prepare_unwritable
MATRIX[("case id made of dots (file ..nii.gz)", "prepare")] = _prepare_dot_id
MATRIX[("dataset.json path with ../ out of the folder", "prepare")] = _prepare_listing(
    training=_entries("amos_0001.nii.gz", "../../elsewhere.nii.gz")
)
MATRIX[("dataset.json absolute path", "prepare")] = _prepare_listing(
    training=[{"image": "/etc/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"}]
)
MATRIX[("symlink to a file that is gone", "prepare")] = _prepare_dangling_symlink
MATRIX[("deeply nested dataset.json", "prepare")] = _prepare_document("[" * 100_000)
MATRIX[("dataset.json is an array, not an object", "prepare")] = _prepare_document("[1, 2]")
MATRIX[("huge dataset.json (64 MiB)", "prepare")] = _prepare_document(None, 64 << 20)
MATRIX[("non-AMOS label set in dataset.json", "prepare")] = _prepare_listing(
    labels={"0": "background", "1": "tumour", "2": "cyst"}
)
MATRIX[("label id missing from dataset.json's labels", "prepare")] = _prepare_undeclared_label
MATRIX[("modality neither CT nor MR", "prepare")] = _prepare_listing(
    training=_entries("amos_0001.nii.gz", modality="PET")
)
MATRIX[("nnU-Net dataset with two input channels", "prepare")] = _prepare_nnunet(
    _nnunet_two_channels
)
MATRIX[("nnU-Net image without its label", "prepare")] = _prepare_nnunet(_nnunet_missing_label)
MATRIX[("nnU-Net numTraining disagrees with imagesTr", "prepare")] = _prepare_nnunet(_nnunet_count)
for _bad in BAD_NIFTI:
    if _bad != "NaN/Inf voxels":
        MATRIX[(_bad, "score")] = _score_bad(_bad)
MATRIX[("prediction missing for a case", "score")] = _score_missing
MATRIX[("empty folder", "score")] = _score_empty
for _bad in BAD_NIFTI:
    if "label" not in _bad:
        MATRIX[(_bad, "predict")] = _predict_bad(_bad)
MATRIX[("non-image file", "predict")] = _predict_non_image
MATRIX[("input file missing", "predict")] = _predict_missing
MATRIX[("empty folder", "predict")] = _predict_empty
MATRIX[("unwritable output folder", "predict")] = _predict_unwritable
MATRIX[("run folder without a checkpoint", "predict")] = _predict_no_checkpoint
MATRIX[("DICOM series with a truncated slice", "predict")] = _predict_torn_dicom
MATRIX[("DICOM slices shifted unevenly (no single tilt)", "predict")] = _predict_sheared_dicom
MATRIX[("not a prepared store", "train")] = _train_with_store(_no_store)
MATRIX[("truncated store.json", "train")] = _train_with_store(_broken_store_json)
MATRIX[("truncated case label.npy", "train")] = _train_with_store(_truncated_case)
MATRIX[("test cases overlap training cases", "train")] = _train_with_store(_leak)
MATRIX[("test cases overlap training cases", "evaluate")] = _evaluate_leak
MATRIX[("store with another split than the run's", "evaluate")] = _evaluate_other_store
MATRIX[("store with another split than the run's", "train")] = _resume_other_store
MATRIX[("store locked by a running prepare", "prepare")] = _prepare_locked
MATRIX[("plan.json with an invalid field", "prepare")] = _prepare_bad_plan
MATRIX[("unwritable output folder", "train")] = _train_unwritable
MATRIX[("unwritable --json report path", "score")] = _score_unwritable
MATRIX[("read-only output folder (ro tmpfs)", "prepare")] = _prepare_readonly
MATRIX[("disk full mid-write (tiny tmpfs)", "prepare")] = _prepare_disk_full
MATRIX[("disk full mid-write (tiny tmpfs)", "predict")] = _predict_disk_full
MATRIX[("disk full mid-write (tiny tmpfs)", "train")] = _train_disk_full
MATRIX[("existing output without --overwrite", "predict")] = _predict_existing_output
MATRIX[("-o the input folder, holding the user's label", "predict")] = _predict_into_input_folder
MATRIX[("--json onto a ground-truth label (even with --overwrite)", "score")] = (
    _score_json_onto_label
)
MATRIX[("run folder holding a run, no --resume", "train")] = _train_into_finished_run
MATRIX[("non-empty folder that is not a run (even with --overwrite)", "train")] = (
    _train_into_foreign_folder
)
MATRIX[("existing --onnx file without --overwrite", "export")] = _export_existing
MATRIX[("existing comparison without --overwrite", "compare")] = _compare_existing
MATRIX[("non-empty folder that is not a tune folder", "tune")] = _tune_foreign_folder
MATRIX[("--lr -1", "train")] = _train_option("--lr", "-1", names="--lr")
MATRIX[("--lr nan", "train")] = _train_option("--lr", "nan", names="--lr")
MATRIX[("--weight-decay inf", "train")] = _train_option(
    "--weight-decay", "inf", names="--weight-decay"
)
MATRIX[("--hparams '{\"base\": 0}'", "train")] = _train_option(
    "--hparams", '{"base": 0}', names="base"
)
MATRIX[("network too large for memory", "train")] = _train_option(
    "--hparams", '{"base": 1024, "depth": 8}', names="GiB"
)
MATRIX[("--epochs -1", "train")] = _train_option("--epochs", "-1", names="--epochs")
MATRIX[("checkpoint without its weights", "predict")] = _predict_damaged_checkpoint
MATRIX[("corrupt SQLite study", "tune")] = _tune_corrupt_study
MATRIX[("DICOM series without PixelSpacing", "predict")] = _predict_dicom(_no_pixel_spacing)
MATRIX[("DICOM orientation with non-perpendicular rows/columns", "predict")] = _predict_dicom(
    _sheared_orientation
)
MATRIX[("--format dicom-seg on a gantry-tilted series", "predict")] = _predict_dicom(
    _tilted_series, "--format", "dicom-seg"
)
MATRIX[("nested export with two CT series, no --series", "predict")] = _predict_dicom(
    _two_ct_series
)
MATRIX[("--series UID not in the input", "predict")] = _predict_dicom(
    _tilted_series, "--series", "1.2.3.4"
)
MATRIX[(".zip declaring 12 GiB of members", "predict")] = _predict_dicom(
    _zip_bomb_header, names="series.zip"
)
MATRIX[("damaged .zip", "predict")] = _predict_dicom(_damaged_zip, names="series.zip")
MATRIX[("nnU-Net input channel 1 (_0001)", "predict")] = _predict_dicom(
    _second_channel, names="amos_0001_0001.nii.gz"
)
MATRIX[("--format both with NIfTI inputs only", "predict")] = _predict_dicom(
    _nifti_scan, "--format", "both", names="scan.nii.gz"
)
MATRIX[("--threads 0", "predict")] = _predict_dicom(
    _nifti_scan, "--threads", "0", names="--threads"
)
MATRIX[("image on another voxel grid than the label map (same shape)", "view")] = _view_other_grid
MATRIX[("read-only output folder (ro tmpfs)", "predict")] = _readonly_predict
MATRIX[("read-only output folder (ro tmpfs), --package", "export")] = _readonly_package
MATRIX[("read-only output folder (ro tmpfs)", "view")] = _readonly_view
MATRIX[("read-only output folder (ro tmpfs)", "plan")] = _readonly_plan
MATRIX[("read-only output folder (ro tmpfs), --json", "score")] = _readonly_score
MATRIX[("postprocessing.json: lcc_organs not a list", "predict")] = _predict_postprocessing(
    '{"lcc_organs": "liver"}'
)
MATRIX[("postprocessing.json: organ id out of range", "predict")] = _predict_postprocessing(
    '{"lcc_organs": [1, 99]}'
)
MATRIX[("postprocessing.json: organ id of the wrong type", "predict")] = _predict_postprocessing(
    '{"lcc_organs": [1.5, true]}'
)
MATRIX[("postprocessing.json is an array, not an object", "predict")] = _predict_postprocessing(
    "[6]"
)
MATRIX[("plan.json median_spacing not a list", "prepare")] = _prepare_plan(
    "median_spacing", median_spacing=1.5
)
MATRIX[("plan.json spacing near 0 (0.0008 mm)", "prepare")] = _prepare_plan(
    "configurations.2d.spacing", spacing=[0.0008, 0.0008, 3.0]
)
MATRIX[("plan.json spacing absurd (1e6 mm)", "prepare")] = _prepare_plan(
    "configurations.2d.spacing", spacing=[1e6, 1.5, 3.0]
)
MATRIX[("plan.json network.class unknown", "prepare")] = _prepare_plan(
    "configurations.2d.network.class", network={"class": "resnet9000"}
)
MATRIX[("plan.json network.args not an object", "prepare")] = _prepare_plan(
    "configurations.2d.network.args", network={"class": "unet", "args": [32, 4]}
)
MATRIX[("plan.json network.args out of range", "prepare")] = _prepare_plan(
    "configurations.2d.network.args", network={"class": "unet", "args": {"base": 10**9}}
)
MATRIX[("plan.json memory_budget_gb absurd", "prepare")] = _prepare_plan(
    "configurations.2d.memory_budget_gb", memory_budget_gb=1e12
)
MATRIX[("--memory-gb inf", "plan")] = _plan_memory("inf")
MATRIX[("--memory-gb nan", "plan")] = _plan_memory("nan")
MATRIX[("--memory-gb -1", "plan")] = _plan_memory("-1")
MATRIX[("model package alone, no -o", "evaluate")] = _evaluate_package(alone=True)
MATRIX[("model package first, no -o", "evaluate")] = _evaluate_package(alone=False)
MATRIX[("ensemble on a store with another split", "evaluate")] = _evaluate_ensemble_other_store
MATRIX[("fold ensemble on --split val (cases it trained on)", "evaluate")] = (
    _evaluate_fold_ensemble_val
)
MATRIX[("-o folder in use by another predict", "predict")] = _predict_folder_in_use
MATRIX[("package member list not a list", "predict")] = _hostile_package(
    _manifest(members="members/0")
)
MATRIX[("package lists one member 40 times", "predict")] = _hostile_package(
    _manifest(members=["members/0"] * 40)
)
MATRIX[("package model card not an object", "predict")] = _hostile_package(
    _entry("model_card.json", b"[1, 2, 3]")
)
MATRIX[("package model card nested 100k deep", "predict")] = _hostile_package(
    _entry("model_card.json", b"[" * 100_000 + b"]" * 100_000)
)
MATRIX[("package model card of 5 MiB", "predict")] = _hostile_package(
    _entry("model_card.json", b" " * (5 << 20) + b"{}")
)
MATRIX[("package postprocessing.json with a name for an id", "predict")] = _hostile_package(
    lambda name, data: data, {"members/0/postprocessing.json": b'{"lcc_organs": ["liver"]}'}
)
MATRIX[("package checkpoint with input size 10^9", "predict")] = _hostile_package(
    _checkpoint(input_size=10**9)
)


def run_row(
    key: tuple[str, str], tmp: Path, fx: Fixtures, subprocess_run: bool = False
) -> tuple[Case, subprocess.CompletedProcess, list[Path]]:
    """Build the row's input, run the command; returns (case, result, temp leftovers)."""
    case = MATRIX[key](tmp, fx)
    try:
        res = amoseg(*case.argv) if subprocess_run else amoseg_inprocess(*case.argv)
        left = leftovers(case.out)
    finally:
        if case.cleanup is not None:
            case.cleanup()
    return case, res, left


def problems(
    key: tuple[str, str], case: Case, res: subprocess.CompletedProcess, left: list[Path]
) -> list[str]:
    """Every way this run breaks the matrix contract (empty = the row passes)."""
    found = []
    if "Traceback" in res.stderr:
        found.append("traceback")
    if res.returncode != 2:
        found.append(f"exit code {res.returncode}, expected 2")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if len(errors) != 1:
        found.append(f"{len(errors)} `error:` lines")
    elif case.names not in errors[0]:
        found.append(f"the error line does not name {case.names}")
    if len(lines) > len(errors) and "Traceback" not in res.stderr:
        found.append("other text on stderr (e.g. a progress bar)")
    if left:
        found.append(f"temp files left: {', '.join(p.name for p in left)}")
    if key[1] == "prepare" and case.out is not None and (case.out / "store.json").exists():
        found.append("failed store has store.json (looks complete)")
    return found


def markdown(base: Path) -> str:
    """Run every row and render the table of what the user sees."""
    fx = Fixtures(base)
    lines = [
        "| bad input | command | exit | message the user sees | contract |",
        "|---|---|---|---|---|",
    ]
    for n, key in enumerate(MATRIX):
        tmp = base / f"row{n:02d}"
        tmp.mkdir()
        try:
            case, res, left = run_row(key, tmp, fx)
            errors = [x for x in res.stderr.splitlines() if x.startswith("error: ")]
            tail = res.stderr.strip().splitlines()
            msg = errors[0] if errors else (tail[-1] if tail else "(no message)")
            msg = msg.replace(str(tmp), "…").replace(str(base), "…")
            exit_code = str(res.returncode)
            verdict = "; ".join(problems(key, case, res, left)) or "ok"
        except NotHere as exc:
            msg, exit_code, verdict = f"(not run here: {exc})", "-", "skipped"
        except Exception as exc:  # a missing command or a broken fixture: show it, go on
            msg, exit_code = f"(not run: {' '.join(str(exc).split())[:150]})", "-"
            verdict = "not run"
        msg = msg.replace("|", "\\|")
        lines.append(f"| {key[0]} | `{key[1]}` | {exit_code} | `{msg}` | {verdict} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if "--markdown" in sys.argv:
        with tempfile.TemporaryDirectory(prefix="amoseg_matrix_") as d:
            print(markdown(Path(d)), end="")
    else:
        print("usage: python -m tests.badfiles --markdown")
