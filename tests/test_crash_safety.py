"""kill -9 at any point must not cost more than the work in flight, nor corrupt what is trusted.

`prepare`: killed mid-write (deterministically, by a SIGKILL injected inside np.save) and at
random moments, then rerun → the store equals an uninterrupted run, array for array, and no
temp leftover survives or is trusted. `train`: killed mid-run → `--resume` continues from
the latest checkpoint (losing at most the epoch in flight) and ends with exactly the metrics
of an uninterrupted run (CPU, fixed seed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from amoseg.errors import AmosegError
from tests import badfiles
from tests.badfiles import REPO, amoseg_inprocess, leftovers

pytestmark = pytest.mark.timeout(240)

CASE_IDS = tuple(f"amos_{n:04d}" for n in range(1, 9))
CASE_SHAPE = (48, 48, 12)
PREP_ARGS = ("--size", "32", "--workers", "1", "--quiet")
TRAIN_ARGS = ("--epochs", "4", "--workers", "0", "--device", "cpu", "--seed", "3")

# A child that runs the CLI but dies by SIGKILL while writing the Nth case: its files are in
# the temp folder, the biggest one torn in half, the rename not done yet: the harshest moment.
KILL_IN_CASE = """
import contextlib, os, signal, sys
import amoseg.store.slice_store as ss
n_kill, calls, real = int(os.environ["KILL_AT_CASE"]), [0], ss.atomic_dir
@contextlib.contextmanager
def atomic_dir(target):
    with real(target) as tmp:
        yield tmp
        calls[0] += 1
        if calls[0] == n_kill:
            big = max(tmp.iterdir(), key=lambda p: p.stat().st_size)
            os.truncate(big, big.stat().st_size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
ss.atomic_dir = atomic_dir
from amoseg.cli.main import main
main(sys.argv[1:])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONWARNINGS": "ignore", "NO_COLOR": "1"}


def _spawn(*args: str | Path, code: str | None = None, env=None) -> subprocess.Popen:
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "amoseg"]
    return subprocess.Popen(
        [*argv, *map(str, args)],
        cwd=REPO,
        env=env or _env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 90) -> bool:
    """SIGKILL `proc` as soon as `ready()` holds; False if it exited first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            return True
        time.sleep(0.002)
    proc.kill()
    raise AssertionError("timed out waiting for the kill point")


def _done_cases(out: Path) -> list[str]:
    cases = out / "cases"
    if not cases.exists():
        return []
    return [
        p.name for p in cases.iterdir() if not p.name.startswith(".") and (p / "meta.json").exists()
    ]


def _assert_same_store(got: Path, want: Path) -> None:
    for name in ("splits.json", "store.json"):
        assert json.loads((got / name).read_text()) == json.loads((want / name).read_text())
    got_cases = sorted(p.name for p in (got / "cases").iterdir())
    want_cases = sorted(p.name for p in (want / "cases").iterdir())
    assert got_cases == want_cases, "case folders differ (a leftover or a missing case)"
    for case in want_cases:
        for array in ("image.npy", "label.npy"):
            a = np.load(got / "cases" / case / array)
            b = np.load(want / "cases" / case / array)
            assert a.dtype == b.dtype and np.array_equal(a, b), f"{case}/{array} differs"
        meta_a = json.loads((got / "cases" / case / "meta.json").read_text())
        meta_b = json.loads((want / "cases" / case / "meta.json").read_text())
        assert meta_a == meta_b
    assert not leftovers(got), f"temp leftovers in the finished store: {leftovers(got)}"


@pytest.fixture(scope="module")
def amos(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny AMOS folder and the store an uninterrupted prepare makes of it."""
    base = tmp_path_factory.mktemp("crash")
    root = badfiles.amos_root(base / "root", ids=CASE_IDS, shape=CASE_SHAPE)
    reference = base / "reference"
    res = amoseg_inprocess("prepare", root, reference, *PREP_ARGS)
    assert res.returncode == 0, res.stderr
    return root, reference


def test_prepare_killed_mid_write_then_rerun_equals_uninterrupted(amos, tmp_path):
    from amoseg.store.slice_store import SliceStore

    root, reference = amos
    out = tmp_path / "store"
    # killed while writing the 3rd case (2 complete cases before it)
    proc = _spawn(
        "prepare", root, out, *PREP_ARGS, code=KILL_IN_CASE, env={**_env(), "KILL_AT_CASE": "3"}
    )
    proc.wait(120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    torn = leftovers(out)
    assert torn, "the kill should have left a temp case folder behind"
    assert len(_done_cases(out)) == 2
    with pytest.raises(AmosegError, match="not a prepared slice store"):
        SliceStore(out)  # the interrupted store is not trusted

    res = amoseg_inprocess("prepare", root, out, *PREP_ARGS)
    assert res.returncode == 0, res.stderr
    _assert_same_store(out, reference)


def test_prepare_killed_at_random_moments_then_rerun_equals_uninterrupted(amos, tmp_path):
    root, reference = amos
    out = tmp_path / "store"
    rng = random.Random(20240611)
    kills = 0
    for _ in range(2):
        target = len(_done_cases(out)) + rng.randint(1, 3)
        delay = rng.uniform(0.0, 0.05)
        proc = _spawn("prepare", root, out, *PREP_ARGS)

        def ready(target=target, delay=delay) -> bool:
            if len(_done_cases(out)) >= target:
                time.sleep(delay)  # somewhere inside the next case
                return True
            return False

        kills += _kill_when(proc, ready)
    assert kills, "prepare finished before any kill point"
    assert not (out / "store.json").exists() or len(_done_cases(out)) == len(CASE_IDS)
    proc = _spawn("prepare", root, out, *PREP_ARGS)
    assert proc.wait(120) == 0, proc.stderr.read().decode()
    _assert_same_store(out, reference)


def _log_rows(run: Path) -> list[dict[str, str]]:
    import csv

    path = run / "log.csv"
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _comparable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    clock = ("seconds", "val_seconds", "minutes")  # wall-clock columns
    return [{k: v for k, v in row.items() if k not in clock} for row in rows]


@pytest.fixture(scope="module")
def reference_run(amos, tmp_path_factory) -> tuple[Path, Path]:
    _root, store = amos
    run = tmp_path_factory.mktemp("train") / "reference"
    res = amoseg_inprocess("train", "logreg-3x3", "--data", store, "--out", run, *TRAIN_ARGS)
    assert res.returncode == 0, res.stderr
    return store, run


def test_train_killed_mid_run_resumes_to_the_same_metrics(reference_run, tmp_path):
    import torch

    store, reference = reference_run
    run = tmp_path / "run"
    kill_after = random.Random(7).randint(1, 2)  # epochs logged before the kill
    proc = _spawn("train", "logreg-3x3", "--data", store, "--out", run, *TRAIN_ARGS)
    killed = _kill_when(proc, lambda: len(_log_rows(run)) >= kill_after)
    assert killed, "training finished before the kill point"
    logged = len(_log_rows(run))
    ckpt = torch.load(run / "checkpoint_latest.pt", map_location="cpu", weights_only=False)
    assert int(ckpt["epoch"]) >= logged, "the latest checkpoint lags the log"
    assert int(ckpt["epoch"]) < 4, "nothing left to resume"

    res = amoseg_inprocess(
        "train", "logreg-3x3", "--data", store, "--out", run, *TRAIN_ARGS, "--resume"
    )
    assert res.returncode == 0, res.stderr
    got, want = _log_rows(run), _log_rows(reference)
    assert [r["epoch"] for r in got] == [str(e) for e in range(1, 5)], "epochs lost or repeated"
    assert _comparable(got) == _comparable(want), "resumed run diverged from the uninterrupted one"
    s_got = json.loads((run / "summary.json").read_text())
    s_want = json.loads((reference / "summary.json").read_text())
    for key in ("epoch", "train_loss", "val_miou", "val_dice", "val_acc", "best_val_miou"):
        assert s_got[key] == s_want[key], key
    assert not leftovers(run)


def test_resume_without_a_checkpoint_is_a_clear_error(reference_run, tmp_path):
    store, _ = reference_run
    res = amoseg_inprocess(
        "train", "logreg-3x3", "--data", store, "--out", tmp_path / "new", *TRAIN_ARGS, "--resume"
    )
    assert res.returncode == 2 and res.stderr.startswith("error: nothing to resume"), res.stderr


def test_train_and_evaluate_refuse_a_leaking_store(reference_run, tmp_path):
    """Test cases that are also training cases would make test scores meaningless."""
    import shutil

    store, run = reference_run
    leaky = tmp_path / "leaky"
    shutil.copytree(store, leaky)
    splits = json.loads((leaky / "splits.json").read_text())
    splits["test"].append(splits["train"][0])
    (leaky / "splits.json").write_text(json.dumps(splits))
    for argv in (
        ("train", "logreg-3x3", "--data", leaky, "--out", tmp_path / "r", *TRAIN_ARGS),
        ("evaluate", run, "--data", leaky),
    ):
        res = amoseg_inprocess(*argv)
        assert res.returncode == 2, res.stderr
        assert "in both 'train' and 'test'" in res.stderr and "splits.json" in res.stderr
    assert not (tmp_path / "r" / "checkpoint_latest.pt").exists()
