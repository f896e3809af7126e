"""`TrainSettings.patch_size` / `--patch-size`: a planned store's patch size as a setting of the
run, validated at the edge, used by the sampler, the memory check and unet3d's checkpoint, kept
on resume, and searchable by `tune`."""

from __future__ import annotations

import json

import pytest
from torch.utils.data import Dataset

from amoseg.atomic import read_json
from amoseg.errors import AmosegError
from amoseg.models.checkpoint import load_checkpoint
from amoseg.training import TrainSettings, load_run, train
from amoseg.training.settings import parse_patch_size
from amoseg.tuning.search_space import describe, load_space
from tests.badfiles import amoseg_inprocess
from tests.tiny_store import make_tiny_store, planned_configuration

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNET = '{"base": 4, "depth": 2, "augment": false}'


@pytest.fixture(scope="module")
def store_2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("p2d") / "store"
    return make_tiny_store(root, cases=3, slices=4, size=32, split=(1, 1, 1),
                           configuration=planned_configuration("2d", (32, 32)))  # fmt: skip


@pytest.fixture(scope="module")
def store_3d(tmp_path_factory):
    root = tmp_path_factory.mktemp("p3d") / "store"
    return make_tiny_store(root, cases=3, slices=12, size=32, split=(1, 1, 1),
                           configuration=planned_configuration("3d", (32, 32, 12)))  # fmt: skip


@pytest.fixture(scope="module")
def seed_store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("seed") / "store", cases=3, slices=2,
                           size=16, split=(1, 1, 1))  # fmt: skip


@pytest.fixture
def spy(monkeypatch):
    """What the trainer streamed (each item's spatial shape) and what the memory check
    measured (its `spatial`)."""
    import amoseg.training.memory as memory
    import amoseg.training.trainer as trainer

    seen: dict[str, list] = {"items": [], "memory": []}
    real_dataset, real_fits = trainer.training_dataset, memory.check_fits

    class Recording(Dataset):
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __getitem__(self, i):
            x, y = self.inner[i]
            seen["items"].append((tuple(x.shape[1:]), tuple(y.shape)))
            return x, y

    def dataset(*args, **kw):
        return Recording(real_dataset(*args, **kw))

    def fits(*args, **kw):
        seen["memory"].append(args[5] if len(args) > 5 else kw.get("spatial"))
        return real_fits(*args, **kw)

    monkeypatch.setattr(trainer, "training_dataset", dataset)
    monkeypatch.setattr(memory, "check_fits", fits)
    return seen


def train_args(store, run, *extra):
    return ["train", "unet", "--data", store, "--out", run, "--epochs", "1", "--max-slices",
            "4", "--batch-size", "2", "--hparams", UNET, "--device", "cpu", "--workers", "0",
            *extra]  # fmt: skip


# ---------------------------------------------------------------- validation at the edge


@pytest.mark.parametrize(
    "value,message",
    [
        ([0, 16], "out of range"),
        ([16, 16.5], "whole number"),
        ([16], "2 or 3 sizes"),
        ([16, 16, 16, 16], "2 or 3 sizes"),
        ([16, 5000], "out of range"),
        ("16xa", "whole numbers joined by x"),
    ],
)
def test_bad_patch_sizes_are_one_line_naming_the_option(value, message):
    with pytest.raises(AmosegError, match=message) as exc:
        TrainSettings(patch_size=value)
    assert exc.value.line().startswith("--patch-size") and "\n" not in exc.value.line()


def test_patch_size_text_takes_x_or_commas():
    assert parse_patch_size("128x128x64") == parse_patch_size("128, 128, 64") == (128, 128, 64)
    assert TrainSettings(patch_size=[24, 16]).patch_size == (24, 16)
    assert TrainSettings.from_dict({"patch_size": [24, 16]}).patch_size == (24, 16)


def test_cli_bad_value_is_one_line(store_2d, tmp_path):
    res = amoseg_inprocess(*train_args(store_2d, tmp_path / "r", "--patch-size", "24x0"))
    assert res.returncode == 2 and "--patch-size is out of range: 0" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "store,model,patch,message",
    [
        ("seed_store", "unet", "16x16", "fixed S×S slices"),
        ("store_2d", "unet", "16x16x8", "has 3 sizes, but the store's '2d' configuration"),
        ("store_3d", "unet", "16x16", "has 2 sizes, but the store's '3d' configuration"),
        ("store_2d", "unet3d", "16x16", "unet3d trains 3D patches"),
    ],
)
def test_patch_size_the_store_or_model_cannot_use_is_refused_before_writing(
    request, tmp_path, store, model, patch, message
):
    args = train_args(request.getfixturevalue(store), tmp_path / "r", "--patch-size", patch)
    args[1] = model
    if model == "unet3d":  # the hyper-parameters are the recipe's own: unet3d has no depth
        args[args.index("--hparams") + 1] = '{"base": 4, "stages": 3}'
    res = amoseg_inprocess(*args)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- training uses it


def test_unet_trains_on_patches_of_the_given_size_and_resume_keeps_it(store_2d, tmp_path, spy):
    run = tmp_path / "r"
    res = amoseg_inprocess(*train_args(store_2d, run, "--patch-size", "24,16"))
    assert res.returncode == 0, res.stderr
    assert spy["items"] and set(spy["items"]) == {((24, 16), (24, 16))}
    assert spy["memory"] == [(24, 16)]
    assert read_json(run / "config.json")["settings"]["patch_size"] == [24, 16]

    # a different size on --resume is ignored like --lr: the run's own wins
    spy["items"].clear()
    args = train_args(store_2d, run, "--patch-size", "16x16", "--resume")
    args[args.index("--epochs") + 1] = "2"
    res = amoseg_inprocess(*args)
    assert res.returncode == 0, res.stderr
    assert spy["items"] and set(spy["items"]) == {((24, 16), (24, 16))}
    assert read_json(run / "config.json")["settings"]["patch_size"] == [24, 16]


def test_unet3d_checkpoint_carries_the_patch_and_resume_without_the_flag_works(store_3d, tmp_path):
    hp = {"base": 4, "stages": 3, "augment": False}
    s = TrainSettings(epochs=1, device="cpu", progress=False, batch_size=2, lr=1e-2,
                      max_slices_per_epoch=2, hparams=hp, patch_size=(16, 16, 8))  # fmt: skip
    train("unet3d", store_3d, tmp_path / "r", s)
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoint_best.pt")
    # (x, y, z) as everywhere; the plan's would be 32×32×12
    assert ckpt["hparams"]["patch_size"] == [16, 16, 8] and "patch" not in ckpt["hparams"]
    model = load_run(tmp_path / "r", device="cpu")
    assert model.patch_size == (16, 16, 8)
    assert model.patch == (8, 16, 16) and model.inferer().patch_size == (8, 16, 16)  # arrays
    # resuming without --patch-size continues with the run's (its hparams patch agrees)
    resumed = TrainSettings(**{**s.to_dict(), "epochs": 2, "patch_size": None}, hparams=hp)
    summary = train("unet3d", store_3d, tmp_path / "r", resumed, resume=True)
    assert summary["epoch"] == 2
    assert read_json(tmp_path / "r" / "config.json")["settings"]["patch_size"] == [16, 16, 8]


# ---------------------------------------------------------------- tune searches it


def _space(tmp_path, spec):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(spec))
    return path


def test_space_patch_size_choices_are_strings_checked_by_the_same_rule(tmp_path):
    space = load_space(_space(tmp_path, {"patch_size": [[160, 160, 48], [128, 128, 64]]}))
    assert space["patch_size"] == {"type": "categorical",
                                   "choices": ["128x128x64", "160x160x48"]}  # fmt: skip
    fixed = load_space(_space(tmp_path, {"patch_size": {"choices": [[24, 16]]}}))
    assert fixed["patch_size"]["choices"] == ["24x16"]
    assert load_space(_space(tmp_path, {"patch_size": [24, 16]}))["patch_size"] == {
        "type": "fixed", "value": "24x16"}  # fmt: skip
    assert "patch_size=24x16" in describe(load_space(_space(tmp_path, {"patch_size": [24, 16]})))


@pytest.mark.parametrize(
    "entry,message",
    [
        ([[0, 16]], "out of range"),
        ([[16, 16], [16, 16, 8]], "all be 2D"),
        ([], "must not be empty"),
        (16, "2 or 3 sizes"),
        ({"low": 16, "high": 32}, "list of choices"),
        ([["a", 16]], "must be a number"),
    ],
)
def test_bad_space_patch_size_is_one_line(tmp_path, entry, message):
    with pytest.raises(AmosegError, match=message) as exc:
        load_space(_space(tmp_path, {"patch_size": entry}))
    assert "space.json" in exc.value.line() and "\n" not in exc.value.line()


def test_tune_trains_each_trial_with_its_patch_size(store_2d, tmp_path):
    space = _space(tmp_path, {"patch_size": [[24, 16], [16, 24]], "batch_size": 2})
    out = tmp_path / "tune"
    res = amoseg_inprocess(
        "tune", "unet", "--data", store_2d, "--out", out, "--trials", "1", "--epochs", "1",
        "--device", "cpu", "--space", space, "--max-slices", "4", "--hparams", UNET,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    best = read_json(out / "best_params.json")
    trial = read_json(out / "trials" / "trial_0000" / "config.json")
    assert best["patch_size"] in ([24, 16], [16, 24])
    assert trial["settings"]["patch_size"] == best["patch_size"]


def test_tune_refuses_a_patch_choice_the_store_cannot_use_before_any_trial(store_2d, tmp_path):
    space = _space(tmp_path, {"patch_size": [[16, 16, 8]]})
    res = amoseg_inprocess(
        "tune", "unet", "--data", store_2d, "--out", tmp_path / "tune", "--trials", "1",
        "--device", "cpu", "--space", space,
    )  # fmt: skip
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "search space patch_size: --patch-size 16x16x8 has 3 sizes" in res.stderr
    assert not (tmp_path / "tune" / "trials").exists()


def test_a_checkpoint_with_the_old_array_order_patch_still_loads():
    from amoseg.models.registry import create_model

    old = create_model("unet3d", base=4, stages=3, patch=[8, 16, 32])  # (z, x, y)
    assert old.patch_size == (16, 32, 8) and old.patch == (8, 16, 32)
    assert "patch" not in old.hparams
