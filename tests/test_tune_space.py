"""`tune` searches any numeric field of the training settings object, and the tuned recipe's
own numeric hyper-parameters, within the ranges the settings and the recipe accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from amoseg.errors import AmosegError
from amoseg.tuning.search_space import describe, load_space
from tests.badfiles import amoseg_inprocess
from tests.tiny_store import make_tiny_store


def _space(tmp_path: Path, spec: dict) -> Path:
    path = tmp_path / "space.json"
    path.write_text(json.dumps(spec))
    return path


def test_a_space_file_may_name_model_hyper_parameters(tmp_path):
    space = load_space(_space(tmp_path, {"base": {"low": 8, "high": 32, "log": True},
                                         "lambda_dice": {"low": 0.5, "high": 2.0},
                                         "depth": [2, 3], "warmup": 0.1}))  # fmt: skip
    assert space["base"] == {"type": "int", "low": 8, "high": 32, "log": True}
    assert space["lambda_dice"]["type"] == "float" and space["depth"]["choices"] == [2, 3]
    assert space["warmup"] == {"type": "fixed", "value": 0.1}
    assert "base log-int 8…32" in describe(space) and "lr" in describe(space)


def test_the_searchable_hyper_parameters_are_the_tuned_recipes_own(tmp_path):
    """unet3d has stages and a foreground share, not depth; unet the other way round."""
    spec = {"stages": [3, 4], "foreground": {"low": 0.2, "high": 0.6}}
    space = load_space(_space(tmp_path, spec), "unet3d")
    assert space["stages"]["choices"] == [3, 4] and space["foreground"]["type"] == "float"
    with pytest.raises(AmosegError, match=r"unknown key.*depth.*allowed keys for unet3d"):
        load_space(_space(tmp_path, {"depth": [2, 3]}), "unet3d")
    with pytest.raises(AmosegError, match=r"unknown key.*stages.*allowed keys for unet:"):
        load_space(_space(tmp_path, {"stages": [3]}), "unet")
    with pytest.raises(AmosegError, match=r"stages\.high"):
        load_space(_space(tmp_path, {"stages": {"low": 3, "high": 40}}), "unet3d")


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"base": {"low": 0, "high": 8}}, "base.low"),
        ({"base": {"low": 8, "high": 8}}, "below high"),
        ({"warmup": {"low": 0.1, "high": 3}}, "warmup.high"),
        ({"depth": [2, 2.5]}, "whole number"),
        ({"patch_sizes": 3}, "unknown key"),
    ],
)
def test_a_space_outside_the_settings_rules_is_one_line(tmp_path, spec, message):
    with pytest.raises(AmosegError, match=message):
        load_space(_space(tmp_path, spec))


def test_tune_trains_with_the_searched_hyper_parameter(tmp_path):
    store = make_tiny_store(tmp_path / "store", cases=4, slices=2, size=16)
    space = _space(tmp_path, {"base": [4, 6], "batch_size": 4})
    out = tmp_path / "tune"
    res = amoseg_inprocess(
        "tune", "unet", "--data", store, "--out", out, "--trials", "1", "--epochs", "1",
        "--device", "cpu", "--space", space, "--max-slices", "4",
        "--hparams", '{"depth": 2, "augment": false}',
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = json.loads((out / "best_params.json").read_text())
    assert best["hparams"]["base"] in (4, 6) and best["batch_size"] == 4
    trial = json.loads((out / "trials" / "trial_0000" / "config.json").read_text())
    assert trial["hparams"]["base"] == best["hparams"]["base"]
    assert trial["hparams"]["depth"] == 2
