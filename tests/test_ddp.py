"""DistributedDataParallel on CPU: torchrun, 2 processes, gloo — the issue's CI check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from amoseg.atomic import read_json
from amoseg.store.slice_store import SliceStore
from amoseg.training import load_run
from amoseg.training.trainer import DUMP_ENV, metrics_of, state_hash, validate
from tests.conftest import REPO
from tests.tiny_store import make_tiny_store


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_torchrun_two_ranks_agree_with_single_process(tmp_path):
    store = make_tiny_store(tmp_path / "store", cases=5, split=(2, 2, 1))
    out = tmp_path / "run"
    torchrun = shutil.which("torchrun") or str(REPO / ".venv" / "bin" / "torchrun")
    env = {**os.environ, DUMP_ENV: str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [
        torchrun,
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "amoseg",
        "train",
        "unet",
        "--data",
        str(store),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--hparams",
        '{"base": 4, "depth": 2}',
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=280)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    # ranks end with identical weights (parameters and BatchNorm statistics) ...
    hashes = [(tmp_path / f"weights_rank{r}.sha256").read_text().strip() for r in (0, 1)]
    assert hashes[0] == hashes[1]
    # ... which are the weights in the checkpoint that rank 0 wrote
    model = load_run(out, device="cpu", which="latest")
    assert state_hash(model.net) == hashes[0]
    summary = read_json(out / "summary.json")
    assert summary["world_size"] == 2 and summary["epoch"] == 2
    # each rank validated one of the 2 val volumes; the all-reduced metrics equal a single
    # process evaluating the saved checkpoint on both
    st = SliceStore(store)
    single = metrics_of(validate(model, st, st.cases("val")))
    for key in ("val_miou", "val_dice", "val_acc"):
        assert summary[key] == pytest.approx(single[key], abs=1e-12), key
    # rank 0 alone logged: one header + 2 epochs
    assert len((out / "log.csv").read_text().splitlines()) == 3
    assert done.stdout.count("steps/epoch") == 1


def test_single_process_ignores_missing_torchrun_env(monkeypatch):
    from amoseg.training.distributed import init_from_env

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_from_env("cpu")
    assert ctx.world == 1 and ctx.is_main and not ctx.active
    assert sys.modules.get("torch.distributed") is not None
