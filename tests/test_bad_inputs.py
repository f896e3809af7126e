"""The bad-input matrix: every row fails with one `error: ...` line naming the file.

Each row (tests/badfiles.py MATRIX: bad input x command) runs `python -m amoseg ...` as a
real subprocess and checks what the user sees: a non-zero exit (2, AmosegError), exactly
one stderr line `error: what: path (hint)` that names the offending file or folder, no
traceback, and no temp file of an interrupted write left in the output folder. The rows run
concurrently (they are independent subprocesses) to keep the matrix fast.
"""

from __future__ import annotations

import errno
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests import badfiles
from tests.badfiles import (
    MATRIX,
    Fixtures,
    NotHere,
    amoseg,
    amoseg_inprocess,
    leftovers,
    run_row,
)

pytestmark = pytest.mark.timeout(300)
KEYS = list(MATRIX)


# Rows also run as real `python -m amoseg` subprocesses: the contract rows and at
# least one per command (the rest run in-process through the same main(), ~50x faster).
SUBPROCESS_KEYS = [
    ("truncated .nii.gz", "prepare"),
    ("image/label shape mismatch", "prepare"),
    ("non-image file", "predict"),
    ("truncated .nii.gz", "score"),
    ("truncated case label.npy", "train"),
]


@pytest.fixture(scope="module")
def fx(tmp_path_factory) -> Fixtures:
    """The shared good store and trained run (predict/train/evaluate rows need them)."""
    fixtures = Fixtures(tmp_path_factory.mktemp("matrix"))
    fixtures.run()
    return fixtures


def _check(key, case, res, left) -> None:
    found = badfiles.problems(key, case, res, left)
    assert not found, f"{'; '.join(found)}\n--- stderr ---\n{res.stderr}"


@pytest.mark.parametrize("key", KEYS, ids=[f"{cmd}: {bad}" for bad, cmd in KEYS])
def test_bad_input_fails_with_one_clear_line(fx, key, tmp_path):
    try:
        case, res, left = run_row(key, tmp_path, fx)
    except NotHere as exc:
        pytest.skip(str(exc))
    _check(key, case, res, left)


@pytest.fixture(scope="module")
def subprocess_results(fx, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("subprocess_rows")

    def one(n_key):
        n, key = n_key
        tmp = base / f"row{n:02d}"
        tmp.mkdir()
        try:
            return key, run_row(key, tmp, fx, subprocess_run=True)
        except NotHere as exc:
            return key, exc

    with ThreadPoolExecutor(max(2, min(4, os.cpu_count() or 2))) as pool:
        return dict(pool.map(one, enumerate(SUBPROCESS_KEYS)))


@pytest.mark.parametrize("key", SUBPROCESS_KEYS, ids=[f"{c}: {b}" for b, c in SUBPROCESS_KEYS])
def test_bad_input_fails_cleanly_in_a_real_subprocess(subprocess_results, key):
    got = subprocess_results[key]
    if isinstance(got, NotHere):
        pytest.skip(str(got))
    _check(key, *got)


def test_contract_rows_are_in_the_matrix():
    """The issue's interface contract: these rows exist (and so are checked above)."""
    assert ("truncated .nii.gz", "prepare") in MATRIX
    assert ("image/label shape mismatch", "prepare") in MATRIX
    assert ("non-image file", "predict") in MATRIX
    assert ("truncated .nii.gz", "score") in MATRIX


def test_debug_flag_shows_the_traceback(tmp_path):
    (tmp_path / "empty").mkdir()
    res = amoseg_inprocess("--debug", "prepare", tmp_path / "empty", tmp_path / "out")
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "AmosegError" in res.stderr


def test_failed_prepare_can_be_rerun_once_the_file_is_fixed(tmp_path):
    """A bad file stops prepare; after fixing it, the same command finishes the store."""
    target = badfiles.amos_root_with_bad(tmp_path / "root", "label ids > 15")
    out = tmp_path / "store"
    argv = ["prepare", tmp_path / "root", out, "--size", badfiles.SIZE]
    assert amoseg_inprocess(*argv, "--quiet").returncode == 2
    badfiles.write_nifti(target, badfiles.good_label(9))
    res = amoseg_inprocess(*argv, "--quiet")
    assert res.returncode == 0, res.stderr
    assert (out / "store.json").exists() and not leftovers(out)


# --- disk full, injected in-process (works everywhere, unlike the tmpfs rows) ------------


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _run_main(argv, capsys) -> tuple[int, str]:
    from amoseg.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    return exc.value.code, capsys.readouterr().err


def test_disk_full_during_case_write_leaves_no_partial_case(tmp_path, monkeypatch, capsys):
    """The 2nd case's write runs out of space (its biggest file torn): it must not appear."""
    import contextlib

    import amoseg.store.slice_store as slice_store

    real_atomic_dir, calls = slice_store.atomic_dir, {"n": 0}

    @contextlib.contextmanager
    def atomic_dir_disk_full(target):
        with real_atomic_dir(target) as tmp:
            yield tmp
            calls["n"] += 1
            if calls["n"] == 2:
                big = max(tmp.iterdir(), key=lambda p: p.stat().st_size)
                os.truncate(big, big.stat().st_size // 2)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(big))

    monkeypatch.setattr(slice_store, "atomic_dir", atomic_dir_disk_full)
    root = badfiles.amos_root(tmp_path / "root")
    out = tmp_path / "store"
    code, err = _run_main(["prepare", root, out, "--size", badfiles.SIZE, "--quiet"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "No space left" in lines[0]
    assert calls["n"] == 2
    assert not leftovers(out)
    assert not (out / "store.json").exists()
    cases = list((out / "cases").iterdir())
    assert len(cases) == 1  # only the whole first case remains
    assert sorted(p.name for p in cases[0].iterdir()) == ["image.npy", "label.npy", "meta.json"]
    np.load(cases[0] / "image.npy")


def test_disk_full_during_json_write_keeps_the_old_file(tmp_path, monkeypatch):
    """atomic write_json: a failed write leaves the previous content, never a torn file."""
    from amoseg import atomic
    from amoseg.errors import AmosegError

    target = tmp_path / "splits.json"
    atomic.write_json(target, {"train": ["a"]})
    monkeypatch.setattr(Path, "write_bytes", _enospc)
    with pytest.raises(AmosegError, match="No space left"):
        atomic.write_json(target, {"train": ["b"]})
    assert atomic.read_json(target) == {"train": ["a"]}
    assert not leftovers(tmp_path)


def test_disk_full_during_nifti_write_leaves_nothing(tmp_path, monkeypatch):
    """save_nifti (predictions): a full disk mid-write leaves no file under the final name."""
    import nibabel as nib

    from amoseg.data import nifti
    from amoseg.errors import AmosegError

    real_save = nib.save

    def save_half(img, filename):
        real_save(img, filename)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))

    monkeypatch.setattr(nifti.nib, "save", save_half)
    img = nib.Nifti1Image(badfiles.good_label(), badfiles.affine())
    target = tmp_path / "out" / "scan_seg.nii.gz"
    with pytest.raises(AmosegError, match="No space left"):
        nifti.save_nifti(img, target)
    assert not target.exists() and not leftovers(tmp_path)


def test_subprocess_helper_runs_the_real_cli():
    """Guard against a matrix that passes because nothing ran: --help must work."""
    res = amoseg("--help")
    assert res.returncode == 0 and "prepare" in res.stdout
    assert isinstance(res, subprocess.CompletedProcess)


def test_docs_table_lists_every_row():
    """docs/reliability.md must show every matrix row (regenerate with --markdown)."""
    doc = (badfiles.REPO / "docs" / "reliability.md").read_text()
    missing = [key for key in MATRIX if f"| {key[0]} | `{key[1]}` |" not in doc]
    assert not missing, f"rows missing from docs/reliability.md: {missing}"


def test_full_disk_reported_as_runtime_error_becomes_one_line(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError('unexpected pos ...'): still one line,
    and no temp file; with free space the same RuntimeError stays a bug (traceback)."""
    from collections import namedtuple

    from amoseg import atomic
    from amoseg.errors import AmosegError

    def torn_write(target):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"PK half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1472")

    with pytest.raises(RuntimeError, match="unexpected pos"):
        torn_write(tmp_path / "a.pt")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _p: usage(10**9, 10**9, 0))
    with pytest.raises(AmosegError, match="no space left on device"):
        torn_write(tmp_path / "b.pt")
    assert not leftovers(tmp_path) and not list(tmp_path.iterdir())
