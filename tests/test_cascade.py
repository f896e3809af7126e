"""The cascade (`3d_cascade_fullres` after `3d_lowres`) on tiny synthetic scans: prepared
without leakage, trained with 1 + 15 input channels, predicted from the run folder, its
package and the API in the input's geometry, evaluated."""

from __future__ import annotations

import json
import pickle
import shutil
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch

import amoseg
from amoseg.atomic import read_json, write_json
from amoseg.cli.main import main
from amoseg.data.synth import generate_dataset
from amoseg.inference.cascade import LowresFolds
from amoseg.inference.segmenter import Segmenter, SegmentOptions
from amoseg.models.cascade_input import CASCADE_ORGANS, one_hot_organs
from amoseg.models.checkpoint import load_checkpoint
from amoseg.ops.augment3d import augment_patches
from amoseg.planning import load_plan
from amoseg.store.cascade import file_sha256
from amoseg.store.prepare import prepare_dataset
from amoseg.store.splits import select_fold
from amoseg.training import TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"base": 4, "stages": 3, "augment": False}
SPLIT = (0.6, 0.2, 0.2)


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    return info.value.code or 0


def settings(**kw) -> TrainSettings:
    base = {"epochs": 1, "device": "cpu", "progress": False, "batch_size": 2,
            "max_slices_per_epoch": 2, "hparams": dict(TINY)}  # fmt: skip
    return TrainSettings(**(base | kw))


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    """5 demo phantoms → a plan with both stages (coarse spacings, tiny patches) → a
    3d_lowres store and a run per fold → the cascade store (--previous) → a cascade run."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cascade")
    generate_dataset(root / "amos", 5, 0, "demo", progress=False)
    plan_file = root / "plan.json"
    # a tiny memory budget makes nnU-Net's rule plan a low-resolution stage
    assert run_cli(["plan", str(root / "amos"), "-o", str(plan_file), "--memory-gb", "1e-4",
                    "--quiet"]) == 0  # fmt: skip
    plan = json.loads(plan_file.read_text())
    configs = plan["configurations"]
    configs["3d_lowres"].update(spacing=[12.0, 12.0, 12.0], patch_size=[16, 16, 8])
    configs["3d_cascade_fullres"].update(spacing=[8.0, 8.0, 8.0], patch_size=[32, 32, 16])
    plan_file.write_text(json.dumps(plan))
    low = root / "low"
    prepare_dataset(root / "amos", low, configuration="3d_lowres", plan=plan_file,
                    split=SPLIT, progress=False)  # fmt: skip
    folds = read_json(low / "splits.json")["folds"]
    for k, fold in enumerate(folds):
        if fold["val"]:
            train("unet3d", low, root / "prev" / f"fold_{k}", settings(fold=k))
    store = root / "casc"
    args = ["prepare", str(root / "amos"), str(store), "--plan", str(plan_file),
            "--configuration", "3d_cascade_fullres", "--previous", str(root / "prev"),
            "--split", ",".join(map(str, SPLIT)), "--device", "cpu", "--quiet"]  # fmt: skip
    assert run_cli(args) == 0
    run = root / "run"
    train("unet3d", store, run, settings(hparams={**TINY, "augment": True}))
    return root, low, store, run


def test_each_training_case_comes_from_a_fold_model_that_never_saw_it(cascade):
    root, low, store, _run = cascade
    low_splits, splits = read_json(low / "splits.json"), read_json(store / "splits.json")
    assert splits == low_splits  # same train/val/test and folds in both stages
    info = read_json(store / "store.json")["previous"]
    assert info["configuration"] == "3d_lowres"
    # what prepare --workers sends to its processes: paths only, the same record
    stage = pickle.loads(pickle.dumps(LowresFolds(root / "prev", device="cpu")))
    assert stage.record() == info
    checked = 0
    for case in splits["train"] + splits["val"]:
        meta = read_json(store / "cases" / case / "meta.json")["previous_stage"]
        k = meta["fold"]
        [run] = meta["runs"]
        assert run == str((root / "prev" / f"fold_{k}").resolve())
        # that run's own training cases, from its config and the store it trained on
        config = read_json(root / "prev" / f"fold_{k}" / "config.json")
        assert config["settings"]["fold"] == k
        trained_on = select_fold(low_splits, k)["train"]
        assert case not in trained_on and case in low_splits["folds"][k]["val"]
        previous = np.load(store / "cases" / case / "previous.npy")
        assert previous.dtype == np.uint8
        assert previous.shape == np.load(store / "cases" / case / "label.npy").shape
        checked += 1
    assert checked == len(splits["train"]) + len(splits["val"]) == 4
    # a test case no fold trained on: the ensemble of all folds
    [test] = splits["test"]
    meta = read_json(store / "cases" / test / "meta.json")["previous_stage"]
    assert meta["fold"] is None and len(meta["runs"]) == len(info["folds"]) == 4


def test_stored_labels_are_the_held_out_fold_models_prediction(cascade):
    root, _low, store, _run = cascade
    case = read_json(store / "splits.json")["val"][0]
    meta = read_json(store / "cases" / case / "meta.json")
    k = meta["previous_stage"]["fold"]
    image = nib.load(meta["image_file"])
    data, affine = np.asarray(image.dataobj), image.affine
    segmenter = Segmenter.open(root / "prev" / f"fold_{k}",
                               SegmentOptions(device="cpu", postprocess="none"))  # fmt: skip
    native = segmenter.labels(data, affine)
    config = load_plan(root / "plan.json").configuration("3d_cascade_fullres")
    expected = config.preprocessor("ct").forward(data, affine, native).label.numpy()
    np.testing.assert_array_equal(np.load(store / "cases" / case / "previous.npy"), expected)


def test_run_has_16_input_channels_and_carries_its_previous_stage(cascade):
    root, _low, store, run = cascade
    config = read_json(run / "config.json")
    assert config["hparams"]["in_channels"] == 1 + CASCADE_ORGANS == 16
    assert config["store"]["plan"]["previous_stage"] == "3d_lowres"
    assert config["store"]["previous_stage"] == read_json(store / "store.json")["previous"]
    state = load_checkpoint(run / "checkpoint_best.pt")["state"]
    first = next(v for k, v in state.items() if v.ndim == 5)
    assert first.shape[1] == 16
    for k, entry in config["store"]["previous_stage"]["folds"].items():
        copied = run / "previous" / f"fold_{k}" / "checkpoint_best.pt"
        assert file_sha256(copied) == entry["checkpoint_sha256"]
        assert file_sha256(root / "prev" / f"fold_{k}" / "checkpoint_best.pt") == file_sha256(
            copied
        )


def test_predict_package_and_api_run_both_stages_in_the_input_geometry(cascade, tmp_path):
    root, _low, store, run = cascade
    test = read_json(store / "splits.json")["test"][0]
    scan = next((root / "amos" / "imagesTr").glob(f"{test}*"))
    out = tmp_path / "out"
    assert run_cli(["predict", str(run), str(scan), "-o", str(out), "--device", "cpu"]) == 0
    [seg] = out.glob("*_seg.nii.gz")
    written, source = nib.load(seg), nib.load(scan)
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine)
    labels = np.asarray(written.dataobj)
    # the run folder moved elsewhere still predicts: previous/ travels with it
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)
    shutil.rmtree(root / "prev_hidden", ignore_errors=True)
    (root / "prev").rename(root / "prev_hidden")
    try:
        package = tmp_path / "m.amoseg.zip"
        assert run_cli(["export", str(moved), "--package", str(package)]) == 0
        with zipfile.ZipFile(package) as zf:
            assert "members/0/previous/3/checkpoint.pt" in zf.namelist()
            assert str(root) not in zf.read("members/0/config.json").decode()  # no local paths
        pkg = Segmenter.open(package, SegmentOptions(device="cpu"))
        np.testing.assert_array_equal(pkg.labels(np.asarray(source.dataobj), source.affine),
                                      labels)  # fmt: skip
        api = amoseg.load(package, device="cpu").segment(scan)
        np.testing.assert_array_equal(np.asarray(api.label.dataobj), labels)
    finally:
        (root / "prev_hidden").rename(root / "prev")


def test_evaluate_scores_the_cascade_on_the_native_grid(cascade):
    from amoseg.reports.evaluate import evaluate_run

    _root, _low, _store, run = cascade
    metrics = evaluate_run(run, device="cpu", progress=False)
    assert metrics["native"]["n_cases"] == 1
    assert 0.0 <= metrics["native"]["mean_dice"] <= 1.0


def test_a_cascade_needs_a_proper_previous_stage(cascade, tmp_path, capsys):
    root, _low, _store, _run = cascade
    base = ["prepare", str(root / "amos"), str(tmp_path / "s"), "--plan", str(root / "plan.json"),
            "--configuration", "3d_cascade_fullres", "--quiet"]  # fmt: skip
    assert run_cli(base) == 2
    assert "--previous PREV" in capsys.readouterr().err
    assert run_cli([*base, "--previous", str(tmp_path / "nowhere")]) == 2
    assert "previous stage folder not found" in capsys.readouterr().err
    # a missing fold: its validation cases would have no held-out prediction
    partial = tmp_path / "partial"
    shutil.copytree(root / "prev", partial)
    shutil.rmtree(partial / "fold_1")
    assert run_cli([*base, "--previous", str(partial)]) == 2
    assert "lacks fold run(s) [1]" in capsys.readouterr().err
    # runs of another configuration
    other = tmp_path / "other"
    shutil.copytree(root / "prev", other)
    for config_path in other.glob("fold_*/config.json"):
        config = read_json(config_path)
        config["store"]["configuration"] = "3d"
        write_json(config_path, config)
    assert run_cli([*base, "--previous", str(other)]) == 2
    assert "trained on '3d'" in capsys.readouterr().err
    # cases that are not the low-resolution store's
    generate_dataset(tmp_path / "amos2", 5, 1, "demo", progress=False)
    args = [*base, "--previous", str(root / "prev")]
    args[1] = str(tmp_path / "amos2")
    assert run_cli(args) == 2
    assert "do not match its previous stage" in capsys.readouterr().err
    # a single stage takes no --previous
    single = [*base[:-2], "3d_lowres", "--previous", str(root / "prev"), "--quiet"]
    assert run_cli(single) == 2
    assert "single stage" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_previous_labels_move_with_the_target_and_one_hot_drops_background():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 16, (2, 8, 12, 10))
    x = torch.randn(2, 1, 8, 12, 10)
    _x, y2, extra = augment_patches(x, y, gen, lr_dim=1, extra=y.clone())
    assert torch.equal(y2, extra)  # warped, mirrored and label-swapped exactly as the target
    hot = one_hot_organs(torch.tensor([[0.0, 1.0, 15.0]]))
    assert hot.shape == (1, 15, 3)
    assert hot[0, :, 0].sum() == 0 and hot[0, 0, 1] == 1 and hot[0, 14, 2] == 1


def test_only_training_patches_carry_perturbed_previous_labels(cascade):
    """nnU-Net's cascade augmentation: training patches' previous-stage channel is perturbed
    (sometimes), validation patches' never, and `previous_augment: false` turns it off."""
    from amoseg.inference.bundle import read_bundles
    from amoseg.store.slice_store import SliceStore

    _root, _low, store_dir, run = cascade
    store = SliceStore(store_dir)
    model = read_bundles(run)[0].model("cpu")
    plain = model.train_dataset(store, 0).patches
    plain.previous_transform = None  # the same draws, unperturbed

    def differ(dataset, n=40) -> int:
        return sum(
            not torch.equal(dataset[i][0][1], plain[i][0][1]) for i in range(n)
        )  # fmt: skip

    assert differ(model.train_dataset(store, 0).patches) > 0
    val = model.train_dataset(store, 0, split="val").patches
    assert val.previous_transform is None
    off = type(model.params).from_dict({**model.hparams, "previous_augment": False}, "unet3d")
    model.params = off
    assert model.train_dataset(store, 0).patches.previous_transform is None
