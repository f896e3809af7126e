"""Shared fixtures. Real AMOS samples live in ../shared/realdata beside the checkout (tests and
CI only; never committed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# CI must give the same verdict on every run of the same commit: property tests draw a fixed
# sequence of examples there (locally they keep exploring and remember failures).
if os.environ.get("CI"):
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None, deadline=None)
    settings.load_profile("ci")
REALDATA = REPO.parent / "shared" / "realdata"

# Under pytest-xdist (`python3 dev.py test` runs one worker per core) each worker gets one
# thread: two workers each running two-thread torch on two cores collapse (every operator
# waits for a descheduled thread; see amoseg.reports.demo.cpu_threads). Subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.exists():
        pytest.skip(f"real samples not found at {REALDATA}")
    return REALDATA


@pytest.fixture(scope="session")
def tiny_unet_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `unet` run trained for one epoch on a tiny synthetic store (once per session)."""
    from tests.predict_models import make_tiny_run

    return make_tiny_run(tmp_path_factory.mktemp("tiny_unet"))


@pytest.fixture
def one_torch_thread():
    """Tiny convolutions are dominated by thread synchronisation: one torch thread is many
    times faster than two on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def threshold_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run folder whose model is the HU-threshold model (training is tested elsewhere)."""
    from tests.predict_models import FakeBundle, ThresholdModel

    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setattr(
        "amoseg.inference.segmenter.read_bundles",
        lambda path: [FakeBundle(Path(path), ThresholdModel(32))],
    )
    return run


# The longest files first: pytest-xdist (loadfile) hands out files in collection order, so the
# ≈ 8-min default demo starts at once on one worker while the other runs everything else,
# instead of starting late and finishing alone.
LONGEST_FIRST = ("test_demo_default.py", "test_vs_nnunet.py", "test_nnunet_parity.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: every other test keeps its order
