"""Training end to end on a tiny store: falling loss, checkpoints, exact resume, CLI, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amoseg.atomic import read_json, write_json
from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.models.checkpoint import load_checkpoint
from amoseg.models.registry import LADDER, load_model
from amoseg.ops.inferers import model_labels
from amoseg.store.slice_store import SliceStore
from amoseg.training import TrainSettings, load_run, train
from amoseg.training.data import EpochSampler, SliceDataset
from amoseg.training.trainer import metrics_of, state_hash, validate
from tests.tiny_store import make_tiny_store

TINY = {
    "mlp": {"work_size": 16, "hidden": [16]},
    "unet-seed": {"base": 8, "depth": 2},
    "unet": {"base": 8, "depth": 2},
}
#: lr high enough that a few steps visibly reduce the loss on the tiny store
FAST_LR = {
    "logreg-pixel": 0.05,
    "logreg-3x3": 0.05,
    "logreg-5x5": 0.05,
    "mlp": 3e-3,
    "unet-seed": 3e-3,
    "unet": 1e-2,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("tiny") / "store")


def settings(name: str, epochs: int = 3, **kw) -> TrainSettings:
    base = {"epochs": epochs, "device": "cpu", "progress": False, "hparams": TINY.get(name, {})}
    if name != "prior":
        base |= {"batch_size": 4, "lr": FAST_LR[name]}
    return TrainSettings(**(base | kw))


@pytest.mark.parametrize("name", LADDER)  # unet3d: tests/test_unet3d.py
def test_every_model_trains_saves_and_reloads(name, store, tmp_path):
    losses: list[float] = []
    summary = train(
        name,
        store,
        tmp_path / name,
        settings(name),
        on_epoch=lambda e, m: losses.append(m["train_loss"]),
    )
    run = tmp_path / name
    for f in (
        "config.json",
        "checkpoint_latest.pt",
        "checkpoint_best.pt",
        "log.csv",
        "summary.json",
    ):
        assert (run / f).exists(), f
    assert read_json(run / "summary.json") == pytest.approx(summary, nan_ok=True)
    assert read_json(run / "config.json")["model"] == name
    if name != "prior":
        assert len(losses) == 3 and losses[-1] < losses[0], losses
    # the reloaded checkpoint reproduces the validation metrics recorded during training
    model = load_run(run, device="cpu", which="latest")
    assert model.input_size == 32 and model.name == name
    val = metrics_of(validate(model, SliceStore(store), SliceStore(store).cases("val")))
    assert val["val_miou"] == pytest.approx(summary["val_miou"], abs=1e-12)
    # save → load gives identical predictions
    model.save(tmp_path / "copy.pt")
    again = load_model(tmp_path / "copy.pt", device="cpu")
    x = np.asarray(SliceStore(store).image("amos_0004"), np.float32)
    np.testing.assert_array_equal(model_labels(again, x), model_labels(model, x))
    best = load_run(run, device="cpu")
    assert best.name == name


def test_prior_reaches_majority_accuracy(store, tmp_path):
    summary = train("prior", store, tmp_path / "p", settings("prior"))
    assert summary["val_acc"] > 0.8 and summary["n_params"] == 16 * 32 * 32


def test_resume_continues_exactly(store, tmp_path):
    """2 epochs uninterrupted == 1 epoch, 'crash' after its checkpoint, resume 1 more."""
    s = settings("unet", epochs=2)
    full = train("unet", store, tmp_path / "full", s)

    def crash(epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt  # stands in for kill -9 after the epoch's checkpoint

    with pytest.raises(KeyboardInterrupt):
        train("unet", store, tmp_path / "cut", s, on_epoch=crash)
    first = load_checkpoint(tmp_path / "cut" / "checkpoint_latest.pt")
    assert first["epoch"] == 1 and first["scheduler"]["last_epoch"] == 3  # 3 steps/epoch
    assert all(v["step"] == 3 for v in first["optimizer"]["state"].values())
    resumed = train("unet", store, tmp_path / "cut", s, resume=True)
    for key in ("epoch", "train_loss", "val_miou", "val_dice", "val_acc", "best_val_miou"):
        assert resumed[key] == full[key], key
    a = load_checkpoint(tmp_path / "full" / "checkpoint_latest.pt")
    b = load_checkpoint(tmp_path / "cut" / "checkpoint_latest.pt")
    assert b["scheduler"] == a["scheduler"] and b["epoch"] == 2
    for k, v in a["state"].items():
        assert torch.equal(v, b["state"][k]), k

    def rows(run):  # every column but the wall-clock ones (val_seconds, seconds, minutes)
        import csv

        clock = ("val_seconds", "seconds", "minutes")
        with open(run / "log.csv") as f:
            return [{k: v for k, v in r.items() if k not in clock} for r in csv.DictReader(f)]

    assert rows(tmp_path / "cut") == rows(tmp_path / "full") and len(rows(tmp_path / "cut")) == 2


def test_run_folder_and_input_errors(store, tmp_path):
    s = settings("logreg-pixel", epochs=1)
    with pytest.raises(AmosegError, match="nothing to resume"):
        train("logreg-pixel", store, tmp_path / "r", s, resume=True)
    train("logreg-pixel", store, tmp_path / "r", s)
    # killed during epoch 1 (config.json written, no checkpoint yet): --resume starts over
    for f in ("checkpoint_latest.pt", "checkpoint_best.pt", "summary.json"):
        (tmp_path / "r" / f).unlink()
    assert train("logreg-pixel", store, tmp_path / "r", s, resume=True)["epoch"] == 1
    with pytest.raises(AmosegError, match="already holds a run"):
        train("logreg-3x3", store, tmp_path / "r", settings("logreg-3x3", epochs=1))
    with pytest.raises(AmosegError, match="cannot resume"):
        train("logreg-3x3", store, tmp_path / "r", settings("logreg-3x3"), resume=True)
    with pytest.raises(AmosegError, match="not a prepared slice store"):
        train("unet", tmp_path, tmp_path / "x", s)
    with pytest.raises(AmosegError, match="unknown model"):
        train("vit", store, tmp_path / "x", s)
    if not torch.cuda.is_available():
        with pytest.raises(AmosegError, match="CUDA was requested"):
            train("logreg-pixel", store, tmp_path / "x", settings("logreg-pixel", device="cuda"))


def test_refuses_a_store_with_leaking_splits(store, tmp_path):
    import shutil

    leaky = tmp_path / "leaky"
    shutil.copytree(store, leaky)
    splits = read_json(leaky / "splits.json")
    splits["test"].append(splits["train"][0])
    write_json(leaky / "splits.json", splits)
    with pytest.raises(AmosegError, match="in both"):
        train("prior", leaky, tmp_path / "x", settings("prior"))


def test_dataset_streams_context_stacks_and_sampler_caps(store):
    st = SliceStore(store)
    ds = SliceDataset(st, "train", context=1)
    assert len(ds) == 12
    x, y = ds[0]  # first slice of the first case: the missing neighbour repeats slice 0
    img = np.asarray(st.image("amos_0001"))
    assert x.dtype == torch.int16 and y.dtype == torch.uint8
    np.testing.assert_array_equal(x.numpy(), img[[0, 0, 1]])
    np.testing.assert_array_equal(y.numpy(), st.label("amos_0001")[0])
    x, _ = ds[8]  # case 2, slice 2
    np.testing.assert_array_equal(x.numpy(), np.asarray(st.image("amos_0002"))[1:4])
    sampler = EpochSampler(ds, seed=0, cap=5)
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(4)
    assert len(first) == 5 and list(sampler) != first
    sampler.set_epoch(3)
    assert list(sampler) == first
    shards = [list(EpochSampler(ds, rank=r, world=2, seed=0)) for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 6 and not set(shards[0]) & set(shards[1])


def test_cli_train_with_params_file(store, tmp_path, capsys):
    params = tmp_path / "best.json"
    params.write_text(json.dumps({"lr": 0.02, "weight_decay": 0.0, "batch_size": 3}))
    out = tmp_path / "cli"
    main(
        [
            "train",
            "logreg-3x3",
            "--data",
            str(store),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--params",
            str(params),
            "--batch-size",
            "6",
            "--workers",
            "0",
        ]
    )
    cfg = read_json(out / "config.json")
    assert cfg["settings"]["lr"] == 0.02 and cfg["settings"]["batch_size"] == 6
    assert "val mIoU" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["train", "nope", "--data", str(store), "--out", str(tmp_path / "n")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'nope'")


def test_cli_train_subprocess_smoke(store, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sub"
    cmd = [
        sys.executable,
        "-m",
        "amoseg",
        "train",
        "prior",
        "--data",
        str(store),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--device",
        "cpu",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "checkpoint_best.pt").exists()
    bad = subprocess.run(
        [*cmd[:-4], "--epochs", "1", "--resume"], capture_output=True, text=True
    )  # prior run exists; --resume of a finished run is fine
    assert bad.returncode == 0, bad.stderr
    h = state_hash(load_run(out, device="cpu").export_module())
    assert len(h) == 64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["unet", "unet-seed", "mlp"])
def test_cuda_training_bf16_and_resume(name, store, tmp_path):
    """GPU path: bf16 autocast + channels_last (unet), pinned workers, device validation."""
    s = settings(name, epochs=2, device="cuda", num_workers=2)
    full = train(name, store, tmp_path / "a", s)
    assert full["device"].startswith("cuda") and np.isfinite(full["train_loss"])
    model = load_run(tmp_path / "a", device="cuda", which="latest")
    st = SliceStore(store)
    val = metrics_of(validate(model, st, st.cases("val")))
    assert val["val_miou"] == pytest.approx(full["val_miou"], abs=1e-9)
    cpu = load_run(tmp_path / "a", device="cpu", which="latest")
    x = np.asarray(st.image("amos_0004"), np.float32)
    agree = (model_labels(cpu, x) == model_labels(model, x)).mean()
    assert agree > 0.98  # bf16 on GPU vs fp32 on CPU: a few boundary pixels may differ

    def crash(epoch, metrics):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(name, store, tmp_path / "b", s, on_epoch=crash)
    resumed = train(name, store, tmp_path / "b", s, resume=True)
    assert resumed["epoch"] == 2
    assert resumed["train_loss"] == pytest.approx(full["train_loss"], rel=1e-2)


def test_val_cases_validates_on_the_first_n_validation_cases(tmp_path, monkeypatch):
    """`--val-cases 1`: each epoch validates on one case; the cap never reaches other splits."""
    import amoseg.training.trainer as trainer

    store = make_tiny_store(tmp_path / "store", cases=5, split=(2, 2, 1))
    seen: list[list[str]] = []
    real = trainer.validate
    monkeypatch.setattr(
        trainer,
        "validate",
        lambda m, st, cases, bs=16: seen.append(list(cases)) or real(m, st, cases, bs),
    )
    val = SliceStore(store).cases("val")
    assert len(val) == 2
    train("logreg-pixel", store, tmp_path / "one", settings("logreg-pixel", epochs=1, val_cases=1))
    train("logreg-pixel", store, tmp_path / "all", settings("logreg-pixel", epochs=1))
    assert seen == [val[:1], val]
    with pytest.raises(AmosegError, match="--val-cases"):
        TrainSettings(val_cases=0)
