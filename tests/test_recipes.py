"""The recipe contract (scikit-learn's `check_estimator` idea): every registered recipe, 2D
and 3D alike, declares what the trainer and the segmenter need, builds, trains two steps on
tiny data, saves, reloads, and predicts the same labels from its run, its reloaded
checkpoint and its package."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from amoseg import hparams as hp
from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.inference.bundle import read_bundles
from amoseg.inference.segmenter import Segmenter, SegmentOptions
from amoseg.models.base import SegmentationModel
from amoseg.models.registry import create_model, load_model, model_class, model_names
from amoseg.ops.inferers import model_labels
from amoseg.store.slice_store import SliceStore
from amoseg.training import TrainSettings, train
from tests.tiny_store import make_tiny_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: tiny parameters per recipe: a recipe registered without an entry here fails the contract
TINY: dict[str, dict] = {
    "prior": {},
    "logreg-pixel": {},
    "logreg-3x3": {},
    "logreg-5x5": {},
    "mlp": {"work_size": 8, "hidden": [8]},
    "unet-seed": {"base": 4, "depth": 2},
    "unet": {"base": 4, "depth": 2, "augment": False},
    "unet3d": {"base": 4, "stages": 3, "patch_size": [16, 16, 4], "augment": False},
}


def test_every_registered_recipe_has_tiny_parameters_here():
    assert set(model_names()) == set(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_declarations(name):
    cls = model_class(name)
    assert issubclass(cls, SegmentationModel) and cls.name == name
    assert cls.dims in (2, 3)
    assert set(cls.mirror_axes) <= set(range(cls.dims))
    assert set(cls.trained_mirror_axes({**cls.Params.defaults(), **TINY[name]})) <= set(
        cls.mirror_axes
    )
    assert set(cls.TRAIN_DEFAULTS) <= {"lr", "weight_decay", "batch_size"}
    with pytest.raises(AmosegError, match="unknown hyper-parameter"):
        create_model(name, input_size=16, no_such_parameter=1)


@pytest.mark.parametrize("name", sorted(TINY))
def test_parameters_are_a_checked_dataclass(name):
    """Each recipe declares its parameters as a frozen dataclass: defaults round-trip, every
    numeric one is refused out of its range and as the wrong type, in one line naming it."""
    params = model_class(name).Params
    assert issubclass(params, hp.Params) and dataclasses.is_dataclass(params)
    defaults = params.defaults()
    assert params.from_dict(defaults, name) == params() and params().to_dict() == defaults
    with pytest.raises(dataclasses.FrozenInstanceError):
        params().__setattr__(next(iter(defaults), "x"), 1)
    for field, rule in params.numeric_rules().items():
        with pytest.raises(AmosegError, match=f"hparams {field} is out of range"):
            params.from_dict({field: rule.hi + 1}, name)
        with pytest.raises(AmosegError, match=f"hparams {field} must be a number"):
            params.from_dict({field: "1"}, name)
        if rule.kind is int:
            with pytest.raises(AmosegError, match=f"hparams {field} must be a whole number"):
                params.from_dict({field: rule.lo + 0.5}, name)
        else:
            with pytest.raises(AmosegError, match=f"hparams {field} must be finite"):
                params.from_dict({field: math.nan}, name)


@pytest.mark.parametrize("name", sorted(TINY))
def test_build_takes_the_configuration_its_network_names(name):
    """`build(configuration)`: a configuration naming this recipe decides its parameters
    (plan `depth` is unet3d's `stages` - 1); explicit ones win; another recipe's args are
    not applied; a wrong one is refused."""
    from amoseg.planning.plan import Network
    from amoseg.planning.planner import seed_configuration

    cls = model_class(name)
    tiny = {k: v for k, v in TINY[name].items() if k not in ("base", "depth", "stages")}
    names = set(cls.Params.names())
    own = {"base": 4, "depth": 2} if "base" in names else {}  # plan.json's network.args
    config = dataclasses.replace(seed_configuration(16), network=Network(name, own))
    model = cls.build(config, input_size=16, **tiny)
    expected = {k: v for k, v in own.items() if k in names}
    if "stages" in names:
        expected["stages"] = 3
    assert {k: model.hparams[k] for k in expected} == expected
    if "context" in names:
        assert model.hparams["context"] == config.context
    other = dataclasses.replace(config, network=Network("not-" + name, {"base": 999_999}))
    assert (
        cls.build(other, input_size=16, **TINY[name]).hparams
        == cls(input_size=16, **TINY[name]).hparams
    )
    if own:
        with pytest.raises(AmosegError, match="hparams base is out of range"):
            cls.build(dataclasses.replace(config, network=Network(name, {"base": 0})), 16)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("recipes") / "store", size=16, slices=8)


@pytest.mark.parametrize("name", sorted(TINY))
def test_builds_trains_saves_reloads_and_predicts_the_same(name, store, tmp_path):
    run = tmp_path / "run"
    settings = TrainSettings(
        epochs=1, device="cpu", progress=False, batch_size=2, max_slices_per_epoch=4,
        num_workers=0, hparams=TINY[name],
    )  # fmt: skip
    summary = train(name, store, run, settings)
    assert summary["model"] == name
    [bundle] = read_bundles(run)
    assert bundle.recipe == name and bundle.configuration_name == "seed"
    model = bundle.model("cpu")
    volume = np.asarray(SliceStore(store).image(SliceStore(store).cases("test")[0]))
    expected = model_labels(model, volume)
    assert expected.shape == volume.shape and expected.dtype == np.uint8
    model.save(tmp_path / "again.pt")
    np.testing.assert_array_equal(model_labels(load_model(tmp_path / "again.pt", "cpu"), volume),
                                  expected)  # fmt: skip
    # the segmenter gives the same labels from the run and from its package
    package = tmp_path / "m.amoseg.zip"
    main(["export", str(run), "--package", str(package)])
    scan, affine = volume.transpose(1, 2, 0), np.diag([2.0, 2.0, 3.0, 1.0])
    options = SegmentOptions(device="cpu", precision="fp32")
    from_run = Segmenter.open(run, options).labels(scan, affine)
    np.testing.assert_array_equal(Segmenter.open(package, options).labels(scan, affine), from_run)
