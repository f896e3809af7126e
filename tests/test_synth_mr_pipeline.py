"""Interface contract of issue 19: MR phantoms go through synth → prepare → train → evaluate →
predict on the MR path (per-image z-score, no body crop), and phantom provenance travels
from dataset.json into the store, the run and predict's output."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.atomic import read_json
from amoseg.cli.main import main


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def mr_run(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("mr_pipeline")
    amos, store, run = work / "amos", work / "store", work / "run"
    argv = ["synth", str(amos), "--cases", "4", "--seed", "3", "--preset", "demo"]
    assert _run([*argv, "--modality", "mr"]) == 0
    assert _run(["prepare", str(amos), str(store), "--size", "32", "--seed", "0", "--quiet"]) == 0
    train = ["train", "unet", "--data", str(store), "--out", str(run), "--epochs", "1"]
    hparams = json.dumps({"base": 8, "depth": 2})
    assert _run([*train, "--max-slices", "8", "--hparams", hparams, "--device", "cpu"]) == 0
    return {"amos": amos, "store": store, "run": run}


def test_mr_phantoms_are_amos_mr(mr_run):
    meta = read_json(mr_run["amos"] / "dataset.json")
    for entry in meta["training"] + meta["validation"] + meta["test"]:
        assert int(Path(entry["image"]).name[5:9]) >= 500
        assert np.asarray(nib.load(mr_run["amos"] / entry["image"]).dataobj).min() >= 0


def test_store_carries_modality_and_synthetic_flag(mr_run):
    from amoseg.store.slice_store import SliceStore

    store = SliceStore(mr_run["store"])
    assert store.info["synthetic"] is True
    cases = [c for split in ("train", "val", "test") for c in store.cases(split)]
    assert cases and all(store.meta(c)["modality"] == "mr" for c in cases)


def test_unet_on_mr_records_zscore_and_no_body_crop(mr_run):
    config = read_json(mr_run["run"] / "config.json")
    assert config["hparams"]["norm"] == "zscore"  # per-image z-score: MR has no scale
    assert config["store"]["synthetic"] is True
    from amoseg.training import load_run

    model = load_run(mr_run["run"], device="cpu")
    assert model.body_threshold is None  # no HU body crop on MR


def test_evaluate_and_predict_mr(mr_run, tmp_path, capsys):
    run, store = mr_run["run"], mr_run["store"]
    assert _run(["evaluate", str(run), "--data", str(store), "--split", "test"]) == 0
    metrics = read_json(run / "eval_test" / "metrics.json")
    assert metrics  # evaluate wrote its metrics for the MR test split
    meta = read_json(mr_run["amos"] / "dataset.json")
    scan = mr_run["amos"] / meta["test"][0]["image"]
    capsys.readouterr()
    assert _run(["predict", str(run), str(scan), "-o", str(tmp_path / "pred")]) == 0
    err = capsys.readouterr().err
    assert err.count("trained on amoseg's synthetic phantoms") == 1  # one note, not per scan
    seg = nib.load(next((tmp_path / "pred").glob("*_seg.nii.gz")))
    src = nib.load(scan)
    assert seg.shape == src.shape and np.allclose(seg.affine, src.affine)
