"""`amoseg fetch-model` against a local HTTP server on 127.0.0.1 (this machine has no internet):
a good zip; a wrong checksum; a truncated zip; members with `..` or absolute names; a second
concurrent fetch. Each failure: one line, exit 2, nothing half-written in the cache, nothing
written outside it."""

from __future__ import annotations

import functools
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from tests.nnunet_tiny_folder import make_model_folder
from tests.test_nnunet_models import MRSEG, TOTALSEG_TOTAL

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    """(folder the server serves, base URL)."""
    root = tmp_path_factory.mktemp("served")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def model_zip(tmp: Path, labels: list[str]) -> bytes:
    folder = make_model_folder(tmp, labels)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.parent.rglob("*")):
            archive.write(path, path.relative_to(folder.parent.parent).as_posix())
    return buffer.getvalue()


def fetch(home: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "AMOSEG_HOME": str(home), "OMP_NUM_THREADS": "1"}
    if url:
        env["AMOSEG_MODEL_URL"] = url
    return subprocess.run(
        [sys.executable, "-m", "amoseg", "fetch-model", *args],
        capture_output=True, text=True, env=env, cwd=home.parent,
    )  # fmt: skip


def assert_refused(proc: subprocess.CompletedProcess, home: Path, name: str, words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    models = home / "models"
    left = [p.name for p in models.iterdir()] if models.exists() else []
    assert name not in left and not [n for n in left if n.endswith(".tmp")], left


def test_good_zip_installs_verifies_and_is_checked_on_later_use(tmp_path, served):
    root, base = served
    (root / "good.zip").write_bytes(model_zip(tmp_path / "make", TOTALSEG_TOTAL))
    home = tmp_path / "home"
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = fetch(home, "totalseg-total-3mm", url=f"{base}/good.zip")
    assert proc.returncode == 0, proc.stderr
    assert "Apache-2.0" in proc.stderr
    path = Path(proc.stdout.strip())
    assert path.parent == home / "models" / "totalseg-total-3mm"
    assert path.name == "nnUNetTrainer__nnUNetPlans__3d_fullres"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({*before, "home"})
    again = fetch(home, "totalseg-total-3mm", url=f"{base}/good.zip")
    assert again.returncode == 0 and "already installed" in again.stderr

    from amoseg.nnunet_models import open_nnunet_model

    os.environ["AMOSEG_HOME"] = str(home)
    try:
        backend = open_nnunet_model(path, device="cpu")
        assert backend.covered == frozenset(range(1, 16))
        with (path / "fold_0" / "checkpoint_final.pth").open("ab") as f:
            f.write(b"tampered")
        from amoseg.errors import AmosegError

        with pytest.raises(AmosegError, match="changed since it was fetched"):
            open_nnunet_model(path, device="cpu")
    finally:
        del os.environ["AMOSEG_HOME"]


def test_local_zip_installs_without_network(tmp_path):
    archive = tmp_path / "m.zip"
    archive.write_bytes(model_zip(tmp_path / "make", TOTALSEG_TOTAL))
    proc = fetch(tmp_path / "home", "totalseg-total-6mm", "--from", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert (Path(proc.stdout.strip()) / "plans.json").is_file()


def test_wrong_checksum_is_refused(tmp_path, served):
    root, base = served
    (root / "mr.zip").write_bytes(model_zip(tmp_path / "make", MRSEG))
    home = tmp_path / "home"
    proc = fetch(home, "mrsegmentator", url=f"{base}/mr.zip")
    assert_refused(proc, home, "mrsegmentator", "checksum mismatch")


def test_truncated_zip_is_refused(tmp_path, served):
    root, base = served
    data = model_zip(tmp_path / "make", TOTALSEG_TOTAL)
    (root / "cut.zip").write_bytes(data[: len(data) // 2])
    home = tmp_path / "home"
    proc = fetch(home, "totalseg-total-3mm", url=f"{base}/cut.zip")
    assert_refused(proc, home, "totalseg-total-3mm", "not a complete zip")


@pytest.mark.parametrize(("member", "words"), [("../evil.txt", "leaves its folder"),
                                               ("/tmp/evil.txt", "absolute name")])  # fmt: skip
def test_members_outside_the_folder_are_refused(tmp_path, served, member, words):
    root, base = served
    buffer = io.BytesIO(model_zip(tmp_path / "make", TOTALSEG_TOTAL))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(zipfile.ZipInfo(member), b"x")
    name = f"bad{abs(hash(member))}.zip"
    (root / name).write_bytes(buffer.getvalue())
    home = tmp_path / "home"
    proc = fetch(home, "totalseg-total-3mm", url=f"{base}/{name}")
    assert_refused(proc, home, "totalseg-total-3mm", words)
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_second_concurrent_fetch_is_refused(tmp_path, served, monkeypatch):
    from amoseg.nnunet_models.fetch import fetch_lock

    _root, base = served
    home = tmp_path / "home"
    monkeypatch.setenv("AMOSEG_HOME", str(home))
    with fetch_lock("totalseg-total-3mm"):  # a first fetch, still running
        proc = fetch(home, "totalseg-total-3mm", url=f"{base}/good.zip")
    assert_refused(proc, home, "totalseg-total-3mm", "is running")
