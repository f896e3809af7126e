"""Learning fast on any machine: nnU-Net's pseudo-Dice on validation patches, training to a
time budget with the LR schedule planned over it, and the per-run progress.png."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from amoseg.atomic import read_json
from amoseg.cli.main import main
from amoseg.metrics.confusion import confusion_matrix, mean_dice, mean_iou, pixel_accuracy
from amoseg.reports.evaluate import ValidationScorer
from amoseg.training import TrainSettings, train
from amoseg.training.validation import PseudoDice, validation_count
from tests.tiny_store import make_tiny_store, planned_configuration

TINY = {"base": 4, "depth": 2}


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("seed") / "store")


@pytest.fixture(scope="module")
def planned_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("planned") / "store"
    return make_tiny_store(root, configuration=planned_configuration("2d", (32, 32)))


def settings(**kw) -> TrainSettings:
    base = {"epochs": 2, "device": "cpu", "progress": False, "hparams": TINY, "batch_size": 4,
            "lr": 1e-2, "precision": "fp32"}  # fmt: skip
    return TrainSettings(**(base | kw))


def log_rows(run) -> list[dict[str, str]]:
    with open(run / "log.csv") as f:
        return list(csv.DictReader(f))


def test_pseudo_dice_equals_the_confusion_matrix_dice_on_a_crafted_batch():
    # class 1 right on 3 of 4 voxels, class 2 only predicted (FP), class 3 only in the truth
    # (FN), class 4 never seen: Dice of 1, 2, 3 = 6/7, 0, 0; class 4 is left out of the mean
    target = torch.tensor([[[0, 1, 1, 1], [1, 0, 3, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1], [0, 0, 0, 2]]])
    second = (torch.tensor([[[5, 5], [0, 0]]]), torch.tensor([[[5, 0], [0, 0]]]))
    score = PseudoDice().update(pred, target).update(*second)  # batches accumulate
    cm = confusion_matrix(pred.flatten(), target.flatten()) + confusion_matrix(
        second[0].flatten(), second[1].flatten()
    )
    # by hand: 1 → 6/7, 2 → 0, 3 → 0, 5 → 2·1/(2·1 + 1) = 2/3
    assert score.pseudo_dice() == pytest.approx((6 / 7 + 0 + 0 + 2 / 3) / 4)
    assert score.pseudo_dice() == pytest.approx(mean_dice(cm))
    metrics = score.metrics()
    assert metrics["val_miou"] == pytest.approx(mean_iou(cm))
    assert metrics["val_acc"] == pytest.approx(pixel_accuracy(cm))


def test_validation_is_a_tenth_of_an_epoch_by_default():
    assert validation_count(per_epoch=400, batch_size=4, available=10_000, wanted=None) == 40
    assert validation_count(per_epoch=10, batch_size=4, available=10_000, wanted=None) == 4
    assert validation_count(per_epoch=400, batch_size=4, available=12, wanted=None) == 12
    assert validation_count(per_epoch=400, batch_size=4, available=100, wanted=7) == 7


def test_planned_store_validates_on_patches_and_evaluates_at_the_end(planned_store, tmp_path):
    run = tmp_path / "run"
    summary = train("unet", planned_store, run, settings(), scorer=ValidationScorer())
    rows = log_rows(run)
    assert [r["val_on"] for r in rows] == ["patches", "patches"]
    assert all(0 <= float(r["val_pseudo_dice"]) <= 1 for r in rows)
    assert rows[-1]["val_pseudo_dice"] == rows[-1]["val_dice"]
    assert summary["validation"] == "patches"
    assert (run / "eval_val" / "metrics.json").exists()  # evaluate on the val split at the end
    assert summary["val_native"]["eval_dir"].endswith("eval_val")
    # the old whole-volume validation stays one option away; seed stores keep it by default
    train("unet", planned_store, tmp_path / "vol", settings(epochs=1, validation="volumes"))
    assert log_rows(tmp_path / "vol")[0]["val_on"] == "volumes"


def test_progress_png_after_two_epochs(seed_store, tmp_path):
    run = tmp_path / "run"
    train("unet", seed_store, run, settings())
    data = (run / "progress.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(run / "progress.png") as img:
        img.verify()
    assert not list(run.glob("*.tmp*"))  # written atomically: no temporary left


def test_time_budget_stops_within_an_epoch_with_the_lr_at_its_floor(seed_store, tmp_path):
    minutes = 0.08  # 4.8 s: ~10-30 tiny epochs
    run = tmp_path / "run"
    summary = train("unet", seed_store, run, settings(time_budget=minutes, lr=1e-2))
    rows = log_rows(run)
    seconds = [float(r["seconds"]) for r in rows]
    used, budget, longest = sum(seconds), minutes * 60, max(seconds)
    assert len(rows) >= 3, rows  # more than the measuring epoch
    assert budget - longest <= used <= budget + longest, (used, seconds)
    # warmup_cosine's floor is 1 % of the base LR; the schedule was planned to end there
    assert summary["lr_end"] == pytest.approx(0.01 * 1e-2, rel=1e-6)
    assert float(rows[-1]["lr"]) < 0.3 * 1e-2  # and it was already close a whole epoch before
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[-1] < lrs[len(lrs) // 2]  # decayed over the budget, not just cut at the end
    config = read_json(run / "config.json")
    assert config["settings"]["time_budget"] == minutes


def test_a_budget_epoch_stops_at_its_share_of_the_budget(planned_store, tmp_path, monkeypatch):
    """One epoch of a large store must not outlast the budget: the first epoch stops its
    steps at BUDGET_EPOCH_SHARE of it (here: after one step), later epochs take as many,
    validation checks its share of the shorter epoch, and a resumed run keeps the length."""
    from amoseg.training import trainer, validation

    steps: list[int] = []
    real_run_epoch, real_resize = trainer.run_epoch, validation.PatchValidation.resize
    sizes: list[int] = []

    def counting(*args, **kwargs):
        loss, n = real_run_epoch(*args, **kwargs)
        steps.append(n)
        return loss, n

    def resize(self, per_epoch):
        real_resize(self, per_epoch)
        sizes.append(self.samples)

    monkeypatch.setattr(trainer, "run_epoch", counting)
    monkeypatch.setattr(validation.PatchValidation, "resize", resize)
    monkeypatch.setattr(trainer, "BUDGET_EPOCH_SHARE", 1e-9)
    s = settings(time_budget=0.05, batch_size=1)

    def cut(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train("unet", planned_store, run, s, on_epoch=cut)
    # validation was sized for the store's whole epoch (12 slices: 2), then for one sample
    assert steps == [1, 1] and sizes == [2, 1], (steps, sizes)
    assert torch.load(run / "checkpoint_latest.pt", weights_only=False)["epoch_samples"] == 1
    steps.clear()
    train("unet", planned_store, run, s, resume=True)
    assert steps and set(steps) == {1}, steps  # resumed: the same short epochs
    assert sizes[-1] == 1


def test_time_budget_cli_contract(seed_store, tmp_path, capsys):
    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as info:
            main(["train", "unet", "--data", str(seed_store), *args])
            raise SystemExit(0)
        return info.value.code or 0

    out = tmp_path / "r"
    hp = '{"base": 4, "depth": 2}'
    assert run("--out", str(out), "--time-budget", "0.02", "--hparams", hp, "--workers", "0") == 0
    assert read_json(out / "config.json")["settings"]["time_budget"] == 0.02
    capsys.readouterr()
    assert run("--out", str(tmp_path / "b"), "--time-budget", "1", "--epochs", "3") == 2
    assert run("--out", str(tmp_path / "c"), "--time-budget", "-1") == 2
    assert run("--out", str(tmp_path / "d"), "--validation", "sometimes") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "--time-budget" in err[0] and "--validation" in err[2]
    assert not any((tmp_path / n).exists() for n in "bcd")


def test_resumed_budget_run_keeps_its_plan(seed_store, tmp_path):
    s = settings(time_budget=0.03)

    def crash(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("unet", seed_store, tmp_path / "cut", s, on_epoch=crash)
    summary = train("unet", seed_store, tmp_path / "cut", s, resume=True)
    rows = log_rows(tmp_path / "cut")
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert summary["lr_end"] == pytest.approx(1e-4, rel=1e-6)
    assert np.isfinite(summary["train_loss"])


def test_a_tune_trial_trains_to_its_budget(seed_store, tmp_path):
    from amoseg.tuning.objective import training_objective

    trial = training_objective(
        "unet", seed_store, epochs=10_000, device="cpu", hparams=TINY, time_budget=0.02
    )
    epochs: list[int] = []
    value = trial({"lr": 1e-2, "weight_decay": 1e-4, "batch_size": 4}, tmp_path / "t",
                  lambda epoch, v: epochs.append(epoch))  # fmt: skip
    assert 1 <= len(epochs) < 10_000 and np.isfinite(value)
    assert read_json(tmp_path / "t" / "config.json")["settings"]["time_budget"] == 0.02
    assert not (tmp_path / "t" / "eval_val").exists()  # trials compare per-epoch metrics only


def test_native_scores_every_n_minutes_and_at_the_end(tmp_path):
    """A planned store prepared from NIfTI files: patch validation, the val scans scored on
    their own grids every N minutes (val_native.csv) and by `evaluate` at the end."""
    from tests.test_amos import write_listing
    from tests.test_lowres_plan import write_ct

    root = tmp_path / "amos"
    write_listing(root, {"training": [write_ct(root, f"amos_{i:04d}") for i in (1, 2, 3)],
                         "validation": []})  # fmt: skip
    store = tmp_path / "store"
    with pytest.raises(SystemExit) as info:
        main(["prepare", str(root), str(store), "--configuration", "2d", "--quiet",
              "--split", "0.34,0.33,0.33"])  # fmt: skip
        raise SystemExit(0)
    assert (info.value.code or 0) == 0
    run = tmp_path / "run"
    summary = train(
        "unet", store, run, settings(val_native_minutes=1e-4), scorer=ValidationScorer()
    )
    with open(run / "val_native.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(0 <= float(r["mean_dice"]) <= 1 for r in rows)
    assert summary["val_native"]["mean_dice"] is not None  # evaluate scored the native grid
    native = read_json(run / "eval_val" / "metrics.json")["native"]
    assert native["n_cases"] == 1


def test_a_run_saved_before_patch_validation_resumes_on_volumes(planned_store, tmp_path):
    from amoseg.atomic import write_json

    run = tmp_path / "old"
    train("unet", planned_store, run, settings(epochs=1, validation="volumes"))
    config = read_json(run / "config.json")
    del config["settings"]["validation"]  # as written before the setting existed
    write_json(run / "config.json", config)
    train("unet", planned_store, run, settings(epochs=2), resume=True)  # auto: patches
    assert [r["val_on"] for r in log_rows(run)] == ["volumes", "volumes"]
