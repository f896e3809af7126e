"""Cross-validation, ensembles and the post-processing choice on tiny synthetic scans."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

import amoseg
from amoseg.atomic import read_json, write_json
from amoseg.cli.main import main
from amoseg.data.synth import generate_dataset
from amoseg.inference.ensemble import split_models
from amoseg.inference.postprocess import (
    POSTPROCESSING_FILE,
    choose_lcc_organs,
    largest_component_per_organ,
    saved_lcc_organs,
)
from amoseg.inference.predict import scan_probabilities
from amoseg.inference.segmenter import Segmenter, SegmentOptions
from amoseg.ops.tta import mirrored
from amoseg.reports.cv import CV_DIR, CV_JSON, postprocessing_choice
from amoseg.store.prepare import prepare_dataset
from amoseg.store.slice_store import SliceStore
from amoseg.training import TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """5 synthetic scans → a 32² store with 5 folds → tiny unet runs on folds 0 and 1."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cv")
    generate_dataset(root / "amos", 5, 0, "demo", progress=False)
    store = root / "store"
    prepare_dataset(root / "amos", store, size=32, split=(0.6, 0.2, 0.2), progress=False)
    runs = root / "runs"
    for fold in (0, 1):
        settings = TrainSettings(
            epochs=1, device="cpu", progress=False, max_slices_per_epoch=8, fold=fold,
            hparams={"base": 4, "depth": 2, "augment": False},
        )  # fmt: skip
        train("unet", store, runs / f"fold_{fold}", settings)
    return root, store, runs


@pytest.mark.slow
def test_cv_summarises_folds_and_saves_a_reproducible_choice(folds, capsys):
    _root, store, runs = folds
    main(["cv", str(runs), "--device", "cpu"])
    assert "2 folds: validation Dice" in capsys.readouterr().out
    result = read_json(runs / CV_DIR / CV_JSON)
    splits = read_json(store / "splits.json")
    for entry in result["folds"]:  # each fold scored on exactly its own validation cases
        cases = [c["case"] for c in entry["raw"]["per_case"]]
        assert cases == splits["folds"][entry["fold"]]["val"]
    assert [r["fold"] for r in result["summary"]] == [0, 1, "mean", "sd"]
    for name in ("cv_summary.md", "cv_summary.csv", "cv_dice.png"):
        assert (runs / CV_DIR / name).stat().st_size > 0
    saved = read_json(runs / "fold_0" / POSTPROCESSING_FILE)
    assert postprocessing_choice(result["folds"]) == saved  # reproduced from cv.json alone
    assert read_json(runs / POSTPROCESSING_FILE) == saved
    assert saved_lcc_organs([runs / "fold_0", runs / "fold_1"]) == sorted(saved["lcc_organs"])


@pytest.mark.slow
def test_cli_and_api_defaults_agree_on_a_cross_validated_run(folds, tmp_path):
    """The same defaults from the shell and from Python: the saved clean-up is applied by
    both (here a choice of every organ, as cv may save), and no test-time mirroring on the
    CPU."""
    _root, store, runs = folds
    mine = tmp_path / "runs"
    for fold in ("fold_0", "fold_1"):
        shutil.copytree(runs / fold, mine / fold)
        write_json(mine / fold / POSTPROCESSING_FILE, {"lcc_organs": list(range(1, 16))})
    scan = _scan(store, tmp_path)
    main(["predict", str(mine), scan, "-o", str(tmp_path / "out"), "--device", "cpu"])
    [seg] = list((tmp_path / "out").glob("*_seg.nii.gz"))
    cli = np.asarray(nib.load(seg).dataobj)
    api = np.asarray(amoseg.load(mine, device="cpu").segment(scan).label.dataobj)
    np.testing.assert_array_equal(api, cli)
    image = nib.load(scan)
    raw = Segmenter.open(mine, SegmentOptions(device="cpu", postprocess="none")).labels(
        np.asarray(image.dataobj), image.affine
    )
    np.testing.assert_array_equal(cli, largest_component_per_organ(raw, list(range(1, 16))))


def test_choice_keeps_lcc_only_where_it_raised_dice():
    raw = [{1: 0.8, 2: 0.5, 3: None}, {1: 0.6, 2: 0.7, 3: None}]
    lcc = [{1: 0.9, 2: 0.5, 3: None}, {1: 0.6, 2: 0.6, 3: None}]
    choice = choose_lcc_organs(raw, lcc)
    assert choice[1]["apply"] and not choice[2]["apply"] and 3 not in choice
    assert choice[1]["dice"] == pytest.approx(0.7) and choice[1]["dice_lcc"] == pytest.approx(0.75)


def test_lcc_on_chosen_organs_only():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[0, 0, 0] = labels[4:6, 4:6, 4:6] = 1  # spleen: an island and a body
    labels[0, 5, 0] = labels[2:4, 0:2, 2:4] = 6  # liver too
    out = largest_component_per_organ(labels, organs=[1])
    assert out[0, 0, 0] == 0 and out[0, 5, 0] == 6 and (out == 1).sum() == 8


def _scan(store, tmp_path):
    meta = SliceStore(store).meta(SliceStore(store).cases("test")[0])
    return meta["image_file"]


@pytest.mark.slow
def test_ensemble_of_two_identical_runs_equals_one_run(folds, tmp_path):
    _root, store, runs = folds
    twin = tmp_path / "twin"
    shutil.copytree(runs / "fold_0", twin)
    image = nib.load(_scan(store, tmp_path))
    data = np.asarray(image.dataobj)
    one = Segmenter.open([runs / "fold_0"], SegmentOptions(device="cpu"))
    two = Segmenter.open([runs / "fold_0", twin], SegmentOptions(device="cpu"))
    p1 = scan_probabilities(one.backends, data, image.affine)
    p2 = scan_probabilities(two.backends, data, image.affine)
    torch.testing.assert_close(p2, p1, atol=1e-6, rtol=0)
    # the CLI writes the arg-max of exactly those probabilities (no saved clean-up choice)
    out = tmp_path / "two"
    scan = _scan(store, tmp_path)
    for run in (runs / "fold_0", twin):
        (run / POSTPROCESSING_FILE).unlink(missing_ok=True)
    main(["predict", str(runs / "fold_0"), str(twin), scan, "-o", str(out), "--device", "cpu"])
    [seg] = list(out.glob("*_seg.nii.gz"))
    assert np.array_equal(np.asarray(nib.load(seg).dataobj), p1.argmax(0).numpy())
    # a folder of runs is an ensemble of all of them; the rest of the arguments are scans
    models, inputs = split_models([runs, twin, scan])
    assert models == [runs, twin] and [str(p) for p in inputs] == [scan]
    members = Segmenter.open(models, SegmentOptions(device="cpu")).bundles
    assert [b.source for b in members] == [runs / "fold_0", runs / "fold_1", twin]


def test_mirrored_2d_predictor_is_left_right_exact():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 16, 3, padding=1)
    x = torch.randn(2, 1, 8, 6)
    x = (x + x.flip(2)) / 2  # symmetric along X (dim 2 of a slice batch)
    with torch.no_grad():
        p = mirrored(net)(x).softmax(1)
        plain = net(x).softmax(1)
    from amoseg.data.mirror import mirror_scores

    assert not torch.allclose(plain, mirror_scores(plain, [2], 2), atol=1e-3)
    torch.testing.assert_close(p, mirror_scores(p, [2], 2), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_evaluate_takes_the_same_model_list_as_predict(folds, tmp_path, capsys):
    _root, store, runs = folds
    out = tmp_path / "ens"
    main(["evaluate", str(runs), "--data", str(store), "--device", "cpu", "-o", str(out)])
    assert "ensemble of 2 on test" in capsys.readouterr().out
    metrics = read_json(out / "metrics.json")
    native = metrics["native"]
    assert metrics["members"] == 2 and native["n_cases"] == len(SliceStore(store).cases("test"))
    assert 0.0 <= native["mean_dice"] <= 1.0 and 0.0 <= native["mean_nsd"] <= 1.0


@pytest.mark.slow
def test_a_rerun_never_replaces_a_hand_edited_summary_or_choice(folds, capsys):
    """cv's own outputs are replaced on a rerun; an edited one only with --overwrite."""
    from tests.badfiles import amoseg_inprocess

    _root, _store, runs = folds
    assert amoseg_inprocess("cv", runs, "--device", "cpu").returncode == 0
    assert amoseg_inprocess("cv", runs, "--device", "cpu").returncode == 0  # its own: replaced
    for edited in (runs / CV_DIR / "cv_summary.md", runs / "fold_1" / POSTPROCESSING_FILE):
        text = edited.read_text()
        edited.write_text(text + "\n")  # a hand edit: one more line
        res = amoseg_inprocess("cv", runs, "--device", "cpu")
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("error: ") == 1 and str(edited) in res.stderr
        assert "Traceback" not in res.stderr
        assert edited.read_text() == text + "\n"  # kept as the user left it
        edited.write_text(text)  # back as cv wrote it: the next edit is the only one
    assert amoseg_inprocess("cv", runs, "--device", "cpu", "--overwrite").returncode == 0
    assert read_json(runs / "fold_1" / POSTPROCESSING_FILE)["lcc_organs"] is not None
