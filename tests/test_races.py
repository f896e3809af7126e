"""Lost work and races: workers die with their parent; two writers never replace each other's
outputs; hand edits survive a rerun (issue 27)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.badfiles import REPO, amos_root

pytestmark = pytest.mark.timeout(180)


def _spawned_children(parent: int) -> list[int]:
    """Pids of multiprocessing spawn workers whose parent is `parent` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_prepare_workers_die_with_a_killed_parent(tmp_path):
    ids = tuple(f"amos_{n:04d}" for n in range(1, 13))
    root = amos_root(tmp_path / "root", ids=ids, shape=(160, 160, 40))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "amoseg", "prepare", str(root), str(tmp_path / "store"),
            "--workers", "2", "--size", "128", "--quiet"]  # fmt: skip
    parent = subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 90
        while len(workers) < 2 and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            workers = _spawned_children(parent.pid)
        assert len(workers) == 2, "prepare did not start its two workers"
        time.sleep(0.5)  # past the initializer: workers are preparing cases
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid in workers if _alive(pid)]
        assert not left, f"workers {left} outlived their killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in filter(_alive, workers):  # on a failure: leave no stray process behind
            os.kill(pid, signal.SIGKILL)


def test_two_predicts_into_one_folder_never_both_write(tmp_path):
    """Started together, without --overwrite: one writes, the other gets one line (the folder
    is in use, or its outputs exist), whichever comes first; never both exit 0."""
    from tests.badfiles import Fixtures, good_image, write_nifti

    run = Fixtures(tmp_path / "fx").run()
    scan = write_nifti(tmp_path / "scan.nii.gz", good_image(shape=(64, 64, 24)))
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    argv = [sys.executable, "-m", "amoseg", "predict", str(run), str(scan), "-o", str(out),
            "--device", "cpu"]  # fmt: skip
    procs = [
        subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert "Traceback" not in refused
    assert [line for line in refused.splitlines() if line.startswith("error: ")], refused


def test_a_claimed_folder_is_refused_to_another_writer_and_released(tmp_path):
    """Same process: a second claim is the same claim; another open of the folder (another
    process's lock) is refused; a folder the claim made and nothing filled is removed."""
    from amoseg.errors import AmosegError
    from amoseg.outputs import _lock_folder, claim_output_folder, release_output_folders

    out = tmp_path / "new" / "out"
    claim_output_folder(out)
    claim_output_folder(out)  # re-entrant within one command
    try:
        with pytest.raises(AmosegError, match="another amoseg predict is writing"):
            _lock_folder(out.resolve(), "predict")
    finally:
        release_output_folders()
    assert not out.exists()  # made by the claim, left empty: gone
    fd, created = _lock_folder(out, "predict")  # free again
    assert fd is not None and created
    os.close(fd)
