"""No command replaces what the user made unless asked (--overwrite), and none ever replaces
one of its own inputs: train, score, export, compare, evaluate and tune (predict has its own
tests in test_predict_outputs.py; synth and demo refuse non-empty folders in theirs)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.badfiles import amoseg_inprocess
from tests.tiny_store import make_tiny_store

FAST = ("--epochs", "1", "--device", "cpu", "--workers", "0")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_tiny_store(tmp_path_factory.mktemp("tiny") / "store", cases=4, slices=2, size=16)


def _one_line_error(res, *needles: str) -> None:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_into_a_finished_run_refuses_and_names_resume_and_overwrite(store, tmp_path):
    run = tmp_path / "run"
    assert amoseg_inprocess("train", "prior", "--data", store, "--out", run, *FAST).returncode == 0
    best = (run / "checkpoint_best.pt").read_bytes()
    res = amoseg_inprocess("train", "prior", "--data", store, "--out", run, *FAST)
    _one_line_error(res, "already holds a run", "--resume", "--overwrite")
    assert (run / "checkpoint_best.pt").read_bytes() == best
    # another model into it: refused the same way
    res = amoseg_inprocess("train", "logreg-pixel", "--data", store, "--out", run, *FAST)
    _one_line_error(res, "already holds a run")
    both = amoseg_inprocess(
        "train", "prior", "--data", store, "--out", run, *FAST, "--resume", "--overwrite"
    )
    _one_line_error(both, "exclude each other")
    (run / "notes.txt").write_text("mine")
    res = amoseg_inprocess("train", "prior", "--data", store, "--out", run, *FAST, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_train_never_takes_over_a_folder_that_is_not_a_run(store, tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("...")
    for extra in ((), ("--overwrite",)):
        res = amoseg_inprocess("train", "prior", "--data", store, "--out", folder, *FAST, *extra)
        _one_line_error(res, "holds no amoseg run")
    assert sorted(p.name for p in folder.iterdir()) == ["chapter1.tex"]


def _labels(folder: Path) -> Path:
    folder.mkdir(parents=True)
    data = np.zeros((8, 8, 3), np.uint8)
    data[2:5, 2:5] = 6
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(folder / "amos_0001.nii.gz"))
    return folder / "amos_0001.nii.gz"


def test_score_json_onto_a_label_map_is_refused_even_with_overwrite(tmp_path):
    label = _labels(tmp_path / "gt")
    _labels(tmp_path / "pred")
    before = label.read_bytes()
    for extra in ((), ("--overwrite",)):
        res = amoseg_inprocess("score", tmp_path / "pred", tmp_path / "gt", "--json", label, *extra)
        _one_line_error(res, "would replace an input")
    assert label.read_bytes() == before


def test_score_reports_are_not_replaced_unless_overwrite(tmp_path):
    _labels(tmp_path / "gt")
    _labels(tmp_path / "pred")
    report = tmp_path / "scores.json"
    report.write_text('{"mine": true}')
    res = amoseg_inprocess("score", tmp_path / "pred", tmp_path / "gt", "--json", report)
    _one_line_error(res, "output exists", "--overwrite")
    assert report.read_text() == '{"mine": true}'
    same = amoseg_inprocess(
        "score", tmp_path / "pred", tmp_path / "gt", "--json", tmp_path / "x", "--csv",
        tmp_path / "x",
    )  # fmt: skip
    _one_line_error(same, "two outputs")
    res = amoseg_inprocess(
        "score", tmp_path / "pred", tmp_path / "gt", "--json", report, "--overwrite"
    )
    assert res.returncode == 0 and '"mine"' not in report.read_text(), res.stderr


def test_export_compare_and_evaluate_refuse_existing_outputs(tmp_path):
    run = tmp_path / "run"
    (run / "eval_test").mkdir(parents=True)
    (run / "eval_test" / "metrics.json").write_text("{}")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"someone else's model")
    _one_line_error(amoseg_inprocess("export", run, "--onnx", onnx), "output exists", "--overwrite")
    assert onnx.read_bytes() == b"someone else's model"
    report = tmp_path / "report"
    report.mkdir()
    (report / "comparison.md").write_text("my edits")
    _one_line_error(amoseg_inprocess("compare", run, "-o", report), "output exists")
    assert (report / "comparison.md").read_text() == "my edits"
    res = amoseg_inprocess("evaluate", run, "--split", "test")
    _one_line_error(res, "output exists", "evaluate again")


def test_tune_refuses_a_folder_that_is_not_a_tune_folder(store, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "scan.nii.gz").write_bytes(b"")
    res = amoseg_inprocess(
        "tune", "logreg-pixel", "--data", store, "--out", folder, "--trials", "1", "--epochs", "1"
    )
    _one_line_error(res, "not a tune folder")
    assert sorted(p.name for p in folder.iterdir()) == ["scan.nii.gz"]
