"""A planned configuration decides what a run of its own network trains with (batch size,
network arguments, context); explicit settings win; the run records the merged result."""

from __future__ import annotations

import pytest

from amoseg.atomic import read_json
from amoseg.data.synth import generate_dataset
from amoseg.errors import AmosegError
from amoseg.models.registry import model_class
from amoseg.store.prepare import prepare_dataset
from amoseg.store.slice_store import SliceStore
from amoseg.training import TrainSettings, configuration_defaults, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan-decides")
    generate_dataset(root / "amos", 4, 0, "demo", progress=False)
    out = {}
    for name in ("2d", "3d"):
        out[name] = root / name
        prepare_dataset(root / "amos", out[name], configuration=name,
                        split=(0.5, 0.25, 0.25), progress=False)  # fmt: skip
    out["seed"] = root / "seed"
    prepare_dataset(root / "amos", out["seed"], size=32, split=(0.5, 0.25, 0.25), progress=False)
    return out


def test_the_configuration_gives_its_own_network_batch_args_and_context(stores):
    store = SliceStore(stores["2d"])
    config = store.configuration
    settings, hparams = configuration_defaults(store, model_class("unet"))
    assert settings == {"batch_size": config.batch_size}
    assert hparams == {**config.network.args, "context": config.context}
    # the 3d configuration counts down-samplings; unet3d counts stages
    store3 = SliceStore(stores["3d"])
    _settings, hparams3 = configuration_defaults(store3, model_class("unet3d"))
    assert hparams3["stages"] == store3.configuration.network.args["depth"] + 1
    # other recipes, and the seed configuration, keep the recipe's own defaults
    assert configuration_defaults(store, model_class("unet3d")) == ({}, {})
    assert configuration_defaults(SliceStore(stores["seed"]), model_class("unet")) == ({}, {})


def test_a_run_records_the_merged_configuration(stores, tmp_path):
    store = SliceStore(stores["2d"])
    plan = store.configuration
    tiny = {"base": 4, "depth": 2, "augment": False}
    settings = TrainSettings(
        epochs=1, device="cpu", progress=False, max_slices_per_epoch=2, num_workers=0,
        hparams=tiny, patch_size=(32, 32),
    )  # fmt: skip
    train("unet", stores["2d"], tmp_path / "a", settings)
    config = read_json(tmp_path / "a" / "config.json")
    assert config["settings"]["batch_size"] == plan.batch_size  # the plan's
    assert config["hparams"]["context"] == plan.context
    assert config["hparams"]["base"] == 4  # explicit hparams win
    assert config["store"]["plan"]["patch_size"] == [32, 32]  # the run's override, recorded
    assert config["store"]["plan"]["spacing"] == list(plan.spacing)
    settings = TrainSettings(
        epochs=1, device="cpu", progress=False, max_slices_per_epoch=2, num_workers=0,
        hparams=tiny, batch_size=3,
    )  # fmt: skip
    train("unet", stores["2d"], tmp_path / "b", settings)
    assert read_json(tmp_path / "b" / "config.json")["settings"]["batch_size"] == 3


def test_with_overrides_checks_like_plan_json(stores):
    config = SliceStore(stores["3d"]).configuration
    assert config.with_overrides(batch_size=5).batch_size == 5
    with pytest.raises(AmosegError, match="patch_size"):
        config.with_overrides(patch_size=(16, 16))  # a 3d configuration needs three sizes
    with pytest.raises(AmosegError, match="batch_size"):
        config.with_overrides(batch_size=0)
