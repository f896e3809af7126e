"""Native-grid evaluate: `amoseg evaluate` scores each test scan on its original grid exactly
as `amoseg predict` followed by `amoseg score` would, on a small synthetic dataset."""

from __future__ import annotations

import shutil

import pytest

from amoseg.atomic import read_json
from amoseg.cli.main import main
from amoseg.data.synth import generate_dataset
from amoseg.metrics.score import score
from amoseg.reports.compare import compare_runs
from amoseg.store.prepare import prepare_dataset
from amoseg.store.slice_store import SliceStore
from amoseg.training import TrainSettings, train


@pytest.fixture(scope="module", params=["seed", "2d"])
def evaluated(request, tmp_path_factory):
    """4 synthetic demo-preset scans → a store (the report's 32² slices, or the planned 2d
    configuration: body crop + median spacing) → a tiny one-epoch unet, evaluated."""
    root = tmp_path_factory.mktemp(f"native-{request.param}")
    generate_dataset(root / "amos", 4, 0, "demo", progress=False)
    store = root / "store"
    if request.param == "seed":
        prepare_dataset(root / "amos", store, size=32, split=(0.5, 0.25, 0.25), progress=False)
    else:
        pytest.importorskip("amoseg.store.samplers")  # planned stores (the plan's volume store)
        main(["prepare", str(root / "amos"), str(store), "--configuration", "2d",
              "--split", "0.5,0.25,0.25", "--quiet"])  # fmt: skip
    run = root / "run"
    settings = TrainSettings(
        epochs=1, device="cpu", progress=False, max_slices_per_epoch=16, num_workers=0,
        hparams={"base": 4, "depth": 2, "augment": False},
    )  # fmt: skip
    train("unet", store, run, settings)
    main(["evaluate", str(run), "--data", str(store), "--split", "test", "--device", "cpu"])
    return root, store, run


def test_native_evaluate_equals_predict_then_score(evaluated, capsys):
    root, store, run = evaluated
    metrics = read_json(run / "eval_test" / "metrics.json")
    native = metrics["native"]
    assert native is not None and native["n_cases"] == len(SliceStore(store).cases("test"))
    # predict the original test images, then score them against the original labels
    images, labels = root / "test_images", root / "test_labels"
    for folder in (images, labels):
        folder.mkdir()
    for case in SliceStore(store).cases("test"):
        meta = SliceStore(store).meta(case)
        shutil.copy(meta["image_file"], images)
        shutil.copy(meta["label_file"], labels)
    main(["predict", str(run), str(images), "-o", str(root / "pred"), "--device", "cpu"])
    report = score(root / "pred", labels)
    assert 0.0 <= native["mean_dice"] <= 1.0 and 0.0 <= native["mean_nsd"] <= 1.0
    assert native["mean_dice"] == pytest.approx(report["mean_case_dice"], abs=1e-6)
    assert native["mean_nsd"] == pytest.approx(report["mean_nsd"], abs=1e-6)
    assert native["score"]["mean_dice"] == pytest.approx(report["mean_dice"], abs=1e-6)
    for ours, theirs in zip(native["score"]["per_class"], report["per_class"], strict=True):
        for key in ("dice", "iou", "case_dice", "nsd", "gt_voxels", "pred_voxels"):
            if key in theirs:
                assert ours[key] == pytest.approx(theirs[key], abs=1e-6, nan_ok=True), key
    # all slices of the original grid were scored, not only the stored organ slices
    first = native["score"]["per_case"][0]
    voxels = sum(row["gt_voxels"] for row in first["per_class"])
    shape = read_json(store / "cases" / first["case"] / "meta.json")["original_shape"]
    assert voxels == shape[0] * shape[1] * shape[2]


def test_report_style_table_is_labelled_and_console_shows_both(evaluated, tmp_path, capsys):
    _root, store, run = evaluated
    metrics = read_json(run / "eval_test" / "metrics.json")
    assert "stored slices" in metrics["report_style_note"]
    copy = shutil.copytree(run, tmp_path / "run")
    main(
        [
            "evaluate",
            str(copy),
            "--data",
            str(store),
            "--device",
            "cpu",
            "--no-native",
            "--overwrite",
        ]
    )  # re-evaluating replaces eval_test: asked for
    out = capsys.readouterr().out
    assert "native grid: skipped" in out and "report-style, stored slices" in out
    assert read_json(copy / "eval_test" / "metrics.json")["native"] is None
    # no native metrics anywhere: compare leaves the native columns out
    compare_runs([copy], tmp_path / "report")
    assert "native Dice" not in (tmp_path / "report" / "comparison.md").read_text()


def test_compare_shows_native_columns_when_present(evaluated, tmp_path):
    _root, _store, run = evaluated
    result = compare_runs([run], tmp_path / "report")
    row = result["rows"][0]
    native = read_json(run / "eval_test" / "metrics.json")["native"]
    assert row["native_dice"] == pytest.approx(100 * native["mean_dice"], abs=0.01)
    assert row["native_nsd"] == pytest.approx(100 * native["mean_nsd"], abs=0.01)
    table = (tmp_path / "report" / "comparison.md").read_text()
    assert "native Dice %" in table and "native NSD %" in table
