"""Shared fixtures. Real AMOS samples live in ../shared/realdata beside the checkout (tests and
CI only; never committed)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


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
