"""Plans sized for the device that trains (`plan --train-on`): a CPU plan gives its 3D
configurations half nnU-Net's width and the smallest batch; the choice lives in plan.json."""

from __future__ import annotations

import json

import pytest

from amoseg.errors import AmosegError
from amoseg.models.unet3d import UNet3d
from amoseg.planning import load_plan, resolve_train_on
from amoseg.planning.planner import MIN_BATCH, batch_for, plan_dataset
from tests.test_amos import write_listing
from tests.test_lowres_plan import BIG_GB, fingerprint, run_cli, write_ct

THREE_D = ("3d", "3d_lowres", "3d_cascade_fullres")


def test_a_cpu_plan_halves_3d_widths_and_batches_and_keeps_the_rest():
    fp = fingerprint((1.0, 1.0, 1.0), (400, 400, 400))
    # 8 GiB: the 3d patch is shrunk until 2 samples fit; the 6 mm stage's 80³ patch fits 4
    gpu = plan_dataset(fp, lowres=(6.0, 6.0, 6.0))
    cpu = plan_dataset(fp, lowres=(6.0, 6.0, 6.0), train_on="cpu")
    assert (gpu.train_on, cpu.train_on) == ("gpu", "cpu")
    assert gpu.configuration("3d_lowres").batch_size == 4
    for name in THREE_D:
        g, c = gpu.configuration(name), cpu.configuration(name)
        assert g.network.args == {"base": 32, "depth": 4}
        assert g.batch_size == batch_for(g.patch_size, 32, 4, 8.0)
        assert c.network.args == {"base": 16, "depth": 4} and c.batch_size == MIN_BATCH
        # the same patch, spacing and stage order: only the network's width and the batch
        assert (c.patch_size, c.spacing, c.previous_stage) == (
            g.patch_size, g.spacing, g.previous_stage
        )  # fmt: skip
        # what a run trained on such a store is built with
        assert UNet3d.configured_params(c)["base"] == 16
    for name in ("seed", "2d"):  # 2D networks are not resized
        assert cpu.configuration(name) == gpu.configuration(name)
    with pytest.raises(AmosegError, match="training device"):
        plan_dataset(fp, train_on="tpu")


def test_train_on_round_trips_and_old_plans_read_as_gpu(tmp_path):
    fp = fingerprint((1.0, 1.0, 1.0), (400, 400, 400))
    path = tmp_path / "plan.json"
    data = plan_dataset(fp, memory_gb=BIG_GB, train_on="cpu").to_dict()
    path.write_text(json.dumps(data))
    assert load_plan(path).train_on == "cpu"
    del data["train_on"]  # written before the field existed
    path.write_text(json.dumps(data))
    assert load_plan(path).train_on == "gpu"
    data["train_on"] = "fpga"
    path.write_text(json.dumps(data))
    with pytest.raises(AmosegError, match="train_on"):
        load_plan(path)


def test_auto_follows_cuda_visibility(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_train_on("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_train_on("auto") == "gpu"
    assert resolve_train_on("cpu") == "cpu"
    with pytest.raises(AmosegError, match="--train-on"):
        resolve_train_on("fast")


def test_cli_train_on(tmp_path, capsys):
    root = tmp_path / "amos"
    write_listing(root, {"training": [write_ct(root, f"amos_{i:04d}") for i in (1, 2, 3)],
                         "validation": []})  # fmt: skip
    for device in ("cpu", "gpu"):
        target = tmp_path / f"{device}.json"
        args = ["plan", str(root), "-o", str(target), "--train-on", device, "--quiet"]
        assert run_cli(args) == 0
        out = capsys.readouterr().out
        assert f"sized for training on {device}" in out
        plan = load_plan(target)
        assert plan.train_on == device
        base = 16 if device == "cpu" else 32
        assert plan.configuration("3d").network.args["base"] == base
        assert f"unet3d base {base}" in out
    code = run_cli(["plan", str(root), "-o", str(tmp_path / "x.json"), "--train-on", "tpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--train-on" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.json").exists()
