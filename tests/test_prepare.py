"""`prepare`: real AMOS slabs, canonical orientation, filtering, resume, settings guard, and
the bad-input matrix (one clear line, exit 2, nothing half-written)."""

from __future__ import annotations

import errno
import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.store.prepare import prepare_dataset
from amoseg.store.slice_store import SliceStore
from tests.conftest import REPO
from tests.test_amos import ORGAN_SLICES, SHAPE, anatomy, make_root, ras_affine, save

STORE_KEYS = {"version", "size", "keep", "modality", "seed", "split", "source", "num_classes"}
META_KEYS = {
    "case_id",
    "n_slices",
    "modality",
    "original_shape",
    "affine",
    "spacing",
    "canonical_shape",
    "kept_slices",
    "image_file",
    "label_file",
}
LIVER = 6


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([*args, "--quiet"])
        raise SystemExit(0)
    out = capsys.readouterr()
    return info.value.code or 0, out.out, out.err


def store_arrays(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    store = SliceStore(out)
    return {
        c: (np.asarray(store.image(c)), np.asarray(store.label(c)))
        for split in ("train", "val", "test")
        for c in store.cases(split)
    }


def test_real_amos_mini(realdata, tmp_path, capsys):
    out = tmp_path / "store"
    code, stdout, _ = run_cli(
        ["prepare", str(realdata / "amos_mini"), str(out), "--size", "64", "--keep", "all"],
        capsys,
    )
    assert code == 0
    assert "background" in stdout
    store = SliceStore(out)
    assert set(store.info) >= STORE_KEYS and store.info["complete"] is True
    assert store.size == 64
    splits = json.loads((out / "splits.json").read_text())
    assert set(splits) == {"train", "val", "test", "folds"}
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == ["amos_0001", "amos_0013"]
    validated = sorted(c for fold in splits["folds"] for c in fold["val"])
    assert len(splits["folds"]) == 5 and validated == sorted(splits["train"] + splits["val"])
    liver_sides = []
    for case_id, source_shape in (("amos_0001", [768, 768, 11]), ("amos_0013", [512, 512, 11])):
        meta = store.meta(case_id)
        assert set(meta) >= META_KEYS
        assert meta["original_shape"] == source_shape and meta["orientation"] == "LAS"
        assert meta["kept_slices"] == list(range(11))
        image, label = store.image(case_id), store.label(case_id)
        assert image.shape == label.shape == (11, 64, 64)
        assert image.dtype == np.int16 and label.dtype == np.uint8
        assert image.min() <= -900 and image.max() >= 100  # HU survived (air and soft tissue)
        source = np.asarray(nib.load(str(realdata / "amos_mini" / meta["label_file"])).dataobj)
        stored = np.bincount(np.asarray(label).ravel(), minlength=16) / label.size
        truth = np.bincount(source.ravel(), minlength=16) / source.size
        big = truth > 0.005  # organs large enough to survive 64² nearest resizing
        np.testing.assert_allclose(stored[big], truth[big], rtol=0.35)
        # Canonical RAS: the patient's right (liver) is at high x in every stored slice.
        liver_sides.append(np.nonzero(np.asarray(label) == LIVER)[1].mean() / 64)
    assert all(side > 0.55 for side in liver_sides), liver_sides
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"]["cases"] == 2 and summary["total"]["slices"] == 22
    assert 0.85 < summary["total"]["class_share"][0] < 0.99  # the "~95 % background" line


def test_las_and_ras_files_store_identical_slices(tmp_path):
    ras, las = tmp_path / "ras", tmp_path / "las"
    make_root(ras, ["amos_0001", "amos_0002"], orientation="RAS")
    make_root(las, ["amos_0001", "amos_0002"], orientation="LAS", label_dtype=np.uint16)
    a = prepare_dataset(ras, tmp_path / "a", size=20, keep="all", progress=False)
    b = prepare_dataset(las, tmp_path / "b", size=20, keep="all", progress=False)
    assert a["total"] == b["total"]
    arrays_a, arrays_b = store_arrays(tmp_path / "a"), store_arrays(tmp_path / "b")
    for case_id, (image, label) in arrays_a.items():
        np.testing.assert_array_equal(image, arrays_b[case_id][0])
        np.testing.assert_array_equal(label, arrays_b[case_id][1])
        assert np.nonzero(label == LIVER)[1].mean() > 10  # patient right = high x (RAS)


def test_keep_organ_drops_empty_slices_and_sizes_match(tmp_path):
    make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003", "amos_0004"])
    summary = prepare_dataset(tmp_path / "amos", tmp_path / "out", size=24, progress=False)
    store = SliceStore(tmp_path / "out")
    for case_id in ["amos_0001", "amos_0002", "amos_0003", "amos_0004"]:
        meta = store.meta(case_id)
        assert meta["kept_slices"] == list(ORGAN_SLICES)
        assert meta["canonical_shape"] == list(SHAPE)
        np.testing.assert_allclose(meta["spacing"], [0.8, 0.8, 2.5], rtol=1e-6)
        assert store.image(case_id).shape == (len(ORGAN_SLICES), 24, 24)
        assert (np.asarray(store.label(case_id)) > 0).any(axis=(1, 2)).all()
    assert [summary["splits"][s]["cases"] for s in ("train", "val", "test")] == [2, 1, 1]
    assert summary["total"]["slices"] == 4 * len(ORGAN_SLICES)


def test_integer_image_is_clipped_to_int16(tmp_path):
    make_root(tmp_path / "amos", ["amos_0001"])
    image, _ = anatomy()
    values = image.astype(np.int32)
    values[:8] = 100_000
    save(tmp_path / "amos/imagesTr/amos_0001.nii.gz", values, ras_affine())
    prepare_dataset(tmp_path / "amos", tmp_path / "out", size=16, keep="all", progress=False)
    stored = SliceStore(tmp_path / "out").image("amos_0001")
    assert stored.dtype == np.int16 and stored.max() == 32767


def test_float_image_keeps_its_precision(tmp_path):
    """MR scaled to [0, 1] must not round to 0/1 (issue #17)."""
    make_root(tmp_path / "amos", ["amos_0600"])  # an MR id: intensities stored as they are
    image, _ = anatomy()
    values = (image.astype(np.float32) + 1000) / 4000
    save(tmp_path / "amos/imagesTr/amos_0600.nii.gz", values, ras_affine())
    prepare_dataset(tmp_path / "amos", tmp_path / "out", size=16, keep="all", progress=False)
    store = SliceStore(tmp_path / "out")
    stored = np.asarray(store.image("amos_0600"))
    assert stored.dtype == np.float32 and store.meta("amos_0600")["image_dtype"] == "float32"
    assert len(np.unique(stored)) > 10 and stored.min() >= 0 and stored.max() <= 1
    assert store.meta("amos_0600")["modality"] == "mr"


def test_rerun_skips_finished_cases_and_cleans_leftovers(tmp_path):
    make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003"])
    out = tmp_path / "out"
    first = prepare_dataset(tmp_path / "amos", out, size=16, progress=False)
    before = store_arrays(out)
    import shutil

    shutil.rmtree(out / "cases" / "amos_0002")
    (out / "cases" / ".amos_0002.abc.tmp").mkdir()  # what a kill -9 mid-write leaves
    again = prepare_dataset(tmp_path / "amos", out, size=16, progress=False)
    assert (again["prepared_now"], again["reused"]) == (1, 2)
    assert not (out / "cases" / ".amos_0002.abc.tmp").exists()
    after = store_arrays(out)
    assert before.keys() == after.keys()
    for case_id in before:
        np.testing.assert_array_equal(before[case_id][0], after[case_id][0])
    assert {k: first[k] for k in ("splits", "total")} == {k: again[k] for k in ("splits", "total")}


def test_interrupted_store_is_not_trusted_and_resumes(tmp_path, capsys):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003"])
    good = (root / "labelsVa/amos_0002.nii.gz").read_bytes()
    _big_label(root)  # passes the header pre-flight, fails once the voxels are read
    out = tmp_path / "out"
    code, _, err = run_cli(["prepare", str(root), str(out), "--size", "16"], capsys)
    assert code == 2 and "amos_0002" in err and "Traceback" not in err
    assert not (out / "store.json").exists() and (out / "store.pending.json").exists()
    assert (out / "cases" / "amos_0001").exists()  # cases before the bad one are kept
    assert not (out / "cases" / "amos_0002").exists()
    with pytest.raises(AmosegError, match="not a prepared slice store"):
        SliceStore(out)
    (root / "labelsVa/amos_0002.nii.gz").write_bytes(good)
    code, stdout, _ = run_cli(["prepare", str(root), str(out), "--size", "16"], capsys)
    assert code == 0 and "1 already done" in stdout
    assert not (out / "store.pending.json").exists()
    assert sorted(store_arrays(out)) == ["amos_0001", "amos_0002", "amos_0003"]


def test_other_settings_refused_unless_overwrite(tmp_path, capsys):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002"])
    out = tmp_path / "out"
    prepare_dataset(root, out, size=16, progress=False)
    code, _, err = run_cli(["prepare", str(root), str(out), "--size", "20"], capsys)
    assert code == 2 and "other settings" in err and "size 16 → 20" in err
    code, _, _ = run_cli(["prepare", str(root), str(out), "--size", "20", "--overwrite"], capsys)
    assert code == 0
    store = SliceStore(out)
    assert store.size == 20 and store.image("amos_0001").shape[1:] == (20, 20)


def test_refuses_non_empty_folder_that_is_not_a_store(tmp_path):
    root = make_root(tmp_path / "amos", ["amos_0001"])
    with pytest.raises(AmosegError, match="not an amoseg slice store"):
        prepare_dataset(root, root, size=16, progress=False)


def test_modality_filter_keeps_split_assignment(tmp_path):
    ids = [f"amos_{i:04d}" for i in range(1, 9)] + [f"amos_{i:04d}" for i in range(501, 505)]
    root = make_root(tmp_path / "amos", ids)
    both = prepare_dataset(root, tmp_path / "all", size=8, progress=False)
    ct = prepare_dataset(root, tmp_path / "ct", size=8, modality="ct", progress=False)
    splits_all = json.loads((tmp_path / "all/splits.json").read_text())
    splits_ct = json.loads((tmp_path / "ct/splits.json").read_text())
    for name in ("train", "val", "test"):  # folds are dealt over each store's own cases
        assert splits_ct[name] == [c for c in splits_all[name] if c < "amos_0500"]
    assert ct["total"]["cases"] == 8 and both["total"]["cases"] == 12
    with pytest.raises(AmosegError, match="no MR cases"):
        make_root(tmp_path / "ctonly", ["amos_0001"])
        prepare_dataset(tmp_path / "ctonly", tmp_path / "x", size=8, modality="mr")


def test_parallel_workers_match_serial(tmp_path):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003"], orientation="LAS")
    prepare_dataset(root, tmp_path / "one", size=12, progress=False)
    prepare_dataset(root, tmp_path / "two", size=12, workers=2, progress=False)
    one, two = store_arrays(tmp_path / "one"), store_arrays(tmp_path / "two")
    assert one.keys() == two.keys()
    for case_id in one:
        np.testing.assert_array_equal(one[case_id][0], two[case_id][0])
        np.testing.assert_array_equal(one[case_id][1], two[case_id][1])


# --- bad input: each breaks amos_0002 of three cases -----------------------------------------


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _relabel(root: Path, label: np.ndarray, affine: np.ndarray | None = None) -> None:
    save(root / "labelsVa/amos_0002.nii.gz", label, ras_affine() if affine is None else affine)


def _big_label(root: Path) -> None:
    label = anatomy()[1].astype(np.uint16)
    label[0, 0, 0] = 16
    _relabel(root, label)


def _nan_image(root: Path) -> None:
    image = anatomy()[0].astype(np.float32)
    image[3, 3, 3] = np.nan
    save(root / "imagesVa/amos_0002.nii.gz", image, ras_affine())


BAD_INPUTS = {
    "truncated label": (lambda r: _truncate(r / "labelsVa/amos_0002.nii.gz"), "truncated"),
    "zero-byte image": (lambda r: (r / "imagesVa/amos_0002.nii.gz").write_bytes(b""), "empty"),
    "text named .nii.gz": (
        lambda r: (r / "imagesVa/amos_0002.nii.gz").write_text("hello\n"),
        "imagesVa/amos_0002.nii.gz",
    ),
    "gzip of garbage": (
        lambda r: (r / "labelsVa/amos_0002.nii.gz").write_bytes(gzip.compress(b"x" * 400)),
        "labelsVa/amos_0002.nii.gz",
    ),
    "shape mismatch": (lambda r: _relabel(r, anatomy()[1][:, :, :5]), "shape"),
    "affine mismatch": (
        lambda r: _relabel(r, anatomy()[1], ras_affine(origin=(0.0, 0.0, 90.0))),
        "affines differ",
    ),
    "label id 16": (_big_label, "label ids outside 0..15"),
    "NaN voxel": (_nan_image, "NaN/Inf"),
    "missing listed file": (
        lambda r: (r / "imagesVa/amos_0002.nii.gz").unlink(),
        "image file listed for amos_0002 is missing",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
def test_bad_input_one_line_exit_2_nothing_half_written(tmp_path, capsys, kind):
    breaker, message = BAD_INPUTS[kind]
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003"])
    breaker(root)
    out = tmp_path / "out"
    code, _, err = run_cli(["prepare", str(root), str(out), "--size", "8"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0] and "amos_0002" in lines[0]
    assert not (out / "store.json").exists()
    assert not (out / "cases" / "amos_0002").exists()

    out_skip = tmp_path / "skip"
    code, _, err = run_cli(
        ["prepare", str(root), str(out_skip), "--size", "8", "--skip-bad"], capsys
    )
    assert code == 0 and "amos_0002" in err and message in err
    store = SliceStore(out_skip)
    kept = [c for s in ("train", "val", "test") for c in store.cases(s)]
    assert sorted(kept) == ["amos_0001", "amos_0003"]
    assert "amos_0002" not in json.dumps(store.splits)
    summary = json.loads((out_skip / "summary.json").read_text())
    assert [s["case_id"] for s in summary["skipped"]] == ["amos_0002"]
    assert not (out_skip / "cases" / "amos_0002").exists()


@pytest.mark.parametrize("setup", ["empty folder", "root not found"])
def test_no_cases_exit_2(tmp_path, capsys, setup):
    root = tmp_path / "amos"
    if setup == "empty folder":
        root.mkdir()
    code, _, err = run_cli(["prepare", str(root), str(tmp_path / "out")], capsys)
    assert code == 2 and err.startswith("error: ") and str(root) in err
    assert not (tmp_path / "out").exists()


def test_skip_bad_with_no_good_case_fails(tmp_path, capsys):
    root = make_root(tmp_path / "amos", ["amos_0001"])
    (root / "labelsTr/amos_0001.nii.gz").write_bytes(b"")
    code, _, err = run_cli(["prepare", str(root), str(tmp_path / "o"), "--skip-bad"], capsys)
    assert code == 2 and "none of the 1 cases" in err
    assert not (tmp_path / "o" / "store.json").exists()


def test_subprocess_bad_inputs_exit_non_zero_without_traceback(tmp_path):
    """Issue contract: a truncated label and a shape-mismatched image → non-zero, no traceback."""
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002"])
    _truncate(root / "labelsTr/amos_0001.nii.gz")
    save(root / "imagesVa/amos_0002.nii.gz", anatomy()[0][:, :, :4], ras_affine())
    result = subprocess.run(
        [sys.executable, "-m", "amoseg", "prepare", str(root), str(tmp_path / "o")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("error: ")


def test_interrupt_then_rerun_equals_uninterrupted_run(tmp_path, monkeypatch):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003", "amos_0004"])
    prepare_dataset(root, tmp_path / "clean", size=12, progress=False)

    from amoseg.store.slice_store import CaseWriter

    real_append = CaseWriter.append
    calls = []

    def dying_append(self, image, label):
        calls.append(self.case_id)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as if killed while the third case is being written
        return real_append(self, image, label)

    monkeypatch.setattr(CaseWriter, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(root, tmp_path / "resumed", size=12, progress=False)
    monkeypatch.setattr(CaseWriter, "append", real_append)
    assert sorted(p.name for p in (tmp_path / "resumed" / "cases").iterdir()) == calls[:2]
    assert not (tmp_path / "resumed" / "store.json").exists()
    again = prepare_dataset(root, tmp_path / "resumed", size=12, progress=False)
    assert (again["prepared_now"], again["reused"]) == (2, 2)

    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    for name in ("store.json", "splits.json"):
        assert (clean / name).read_text() == (resumed / name).read_text()
    summaries = [json.loads((d / "summary.json").read_text()) for d in (clean, resumed)]
    for summary in summaries:
        summary.pop("store")
    assert summaries[0] == summaries[1]
    files = sorted(p.relative_to(clean) for p in (clean / "cases").rglob("*"))
    assert files == sorted(p.relative_to(resumed) for p in (resumed / "cases").rglob("*"))
    for rel in files:
        if rel.suffix in (".npy", ".json"):
            assert (clean / rel).read_bytes() == (resumed / rel).read_bytes(), rel


@pytest.mark.parametrize("codes", ["LAS", "RAS", "LPS", "PSR", "SAL", "ILP"])
def test_canonical_view_matches_to_canonical(codes):
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff

    from amoseg.preprocessing.geometry import canonical_view, to_canonical

    data = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7, order="F")
    ornt = axcodes2ornt(tuple(codes))
    affine = np.linalg.inv(inv_ornt_aff(ornt, data.shape))
    assert "".join(nib.aff2axcodes(affine)) == codes
    np.testing.assert_array_equal(canonical_view(data, affine), to_canonical(data, affine))


def test_synthetic_dataset_prepares(tmp_path, capsys):
    """Interface contract: `amoseg synth` output feeds `amoseg prepare ... --keep all`."""
    synth = pytest.importorskip("amoseg.data.synth")
    root = synth.generate_dataset(tmp_path / "amos", 4, 0, preset="demo")
    out = tmp_path / "store"
    code, _, _ = run_cli(
        ["prepare", str(root), str(out), "--size", "32", "--seed", "1", "--keep", "all"], capsys
    )
    assert code == 0
    splits = json.loads((out / "splits.json").read_text())
    assert (
        set(splits) == {"train", "val", "test", "folds"}
        and sum(len(splits[n]) for n in ("train", "val", "test")) == 4
    )
    store = SliceStore(out)
    for case_id in [c for n in ("train", "val", "test") for c in splits[n]]:
        meta = store.meta(case_id)
        assert store.label(case_id).shape == (meta["canonical_shape"][2], 32, 32)
        assert store.label(case_id).max() > 0


def test_full_disk_is_never_skipped_as_a_bad_case(tmp_path, monkeypatch):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002"])
    out = tmp_path / "out"
    from amoseg.store.slice_store import CaseWriter

    def full_disk(self, image, label):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(CaseWriter, "append", full_disk)
    with pytest.raises(AmosegError, match="No space left"):
        prepare_dataset(root, out, size=8, skip_bad=True, progress=False)
    assert not (out / "store.json").exists()
    assert not list((out / "cases").iterdir())  # no case folder, no temp folder left behind
