"""`amoseg score`: matching, the report's numbers, JSON/CSV output and one-line errors."""

from __future__ import annotations

import csv
import gzip
import json
import math
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.metrics.confusion import confusion_matrix, dice_per_class, iou_per_class, mean_iou
from amoseg.metrics.score import match_cases, score
from amoseg.metrics.surface import volume_metrics
from tests.conftest import REPO

SHAPE = (20, 18, 6)
SPACING = (0.8, 0.8, 3.0)


def _affine(spacing=SPACING, origin=(-10.0, 5.0, 20.0)):
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


def _write(path: Path, data: np.ndarray, affine=None, dtype=np.uint16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(dtype), _affine() if affine is None else affine), path)
    return path


def _label(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lab = np.zeros(SHAPE, dtype=np.uint8)
    lab[3:9, 4:10, 1:5] = 6  # liver
    lab[11:15, 3:7, 2:5] = 1  # spleen
    lab[12:16, 11:15, 1:3] = 3
    lab[rng.random(SHAPE) < 0.01] = 8
    return lab


@pytest.fixture
def folders(tmp_path):
    """GT amos_0001/0002; predictions amos_0001.nii.gz and amos_0002_seg.nii.gz (nnU-Net style)."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gts, preds = {}, {}
    for i, name in ((1, "amos_0001.nii.gz"), (2, "amos_0002_seg.nii.gz")):
        gt = _label(i)
        pred = np.roll(gt, 1, axis=0)
        if i == 2:
            pred[pred == 3] = 0  # left kidney missed entirely in case 2
        case = f"amos_000{i}"
        _write(gt_dir / f"{case}.nii.gz", gt)
        _write(pred_dir / name, pred, dtype=np.uint8)
        gts[case], preds[case] = gt, pred
    return pred_dir, gt_dir, preds, gts


def test_match_by_name_with_seg_suffix(folders):
    pred_dir, gt_dir, _, _ = folders
    pairs = match_cases(pred_dir, gt_dir)
    assert [(p.case_id, p.pred.name, p.gt.name) for p in pairs] == [
        ("amos_0001", "amos_0001.nii.gz", "amos_0001.nii.gz"),
        ("amos_0002", "amos_0002_seg.nii.gz", "amos_0002.nii.gz"),
    ]


def test_report_numbers_come_from_one_matrix(folders):
    pred_dir, gt_dir, preds, gts = folders
    report = score(pred_dir, gt_dir, tolerance_mm=1.0)
    total = sum(confusion_matrix(preds[c], gts[c]) for c in sorted(gts))
    assert report["accuracy"] == pytest.approx(np.trace(total) / total.sum(), abs=1e-6)
    assert report["miou"] == pytest.approx(mean_iou(total), abs=1e-6)
    assert report["miou_organs"] == pytest.approx(mean_iou(total, organs_only=True), abs=1e-6)
    assert report["confusion_matrix"] == total.tolist()
    by_name = {row["name"]: row for row in report["per_class"]}
    assert by_name["liver"]["dice"] == pytest.approx(dice_per_class(total)[6], abs=1e-6)
    assert by_name["liver"]["iou"] == pytest.approx(iou_per_class(total)[6], abs=1e-6)
    assert by_name["pancreas"]["absent"] and by_name["pancreas"]["dice"] is None
    # per-case 3D metrics agree with volume_metrics on the same arrays and spacing
    case2 = report["per_case"][1]
    assert case2["case"] == "amos_0002" and case2["spacing_mm"] == pytest.approx(SPACING)
    ref = volume_metrics(preds["amos_0002"], gts["amos_0002"], SPACING, 1.0)
    for c in (1, 6):
        row = case2["per_class"][c]
        assert row["nsd"] == pytest.approx(ref[c]["nsd"], abs=1e-6)
        assert row["hd95_mm"] == pytest.approx(ref[c]["hd95"], abs=1e-6)
        assert row["dice"] == pytest.approx(ref[c]["dice"], abs=1e-6)
    # left kidney: missed in case 2 → Dice 0, NSD 0, HD95 infinite (null in JSON), counted
    kidney = case2["per_class"][3]
    assert (kidney["dice"], kidney["nsd"], kidney["hd95_mm"]) == (0.0, 0.0, None)
    assert by_name["left kidney"]["n_hd95_infinite"] == 1
    assert by_name["left kidney"]["n_cases"] == 2
    case1_kidney = report["per_case"][0]["per_class"][3]
    assert by_name["left kidney"]["case_dice"] == pytest.approx(
        (case1_kidney["dice"] + 0.0) / 2, abs=1e-6
    )
    assert by_name["left kidney"]["hd95_mm"] == pytest.approx(case1_kidney["hd95_mm"], abs=1e-6)


def test_cli_writes_json_csv_and_table(folders, tmp_path, capsys):
    pred_dir, gt_dir, _, _ = folders
    out_json, out_csv = tmp_path / "out" / "score.json", tmp_path / "out" / "score.csv"
    main(["score", str(pred_dir), str(gt_dir), "--json", str(out_json), "--csv", str(out_csv)])
    text = capsys.readouterr().out
    for word in ("liver", "spleen", "IoU", "Dice", "NSD", "HD95", "accuracy", "mIoU"):
        assert word in text
    report = json.loads(out_json.read_text())
    assert [k for k in report if "acc" in k] and [k for k in report if "dice" in k]
    assert report["tolerance_mm"] == 2.0 and report["n_cases"] == 2
    for case in report["per_case"]:
        assert any("acc" in k for k in case) and any("dice" in k for k in case)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 2 * 16
    kidney2 = next(r for r in rows if r["case"] == "amos_0002" and r["class_id"] == "3")
    assert kidney2["dice"] == "0.0" and kidney2["hd95_mm"] == "inf"
    absent = next(r for r in rows if r["class_name"] == "pancreas")
    assert absent["absent"] == "1" and absent["dice"] == ""
    assert sorted(p.name for p in out_json.parent.iterdir()) == ["score.csv", "score.json"]


def test_single_files_and_tolerance(tmp_path):
    gt = _label(0)
    gt[gt == 8] = 0  # no speckles: the roll below then wraps nothing around
    g = _write(tmp_path / "truth.nii.gz", gt)
    p = _write(tmp_path / "anything.nii", np.roll(gt, 1, axis=2))  # one 3 mm slice off
    tight = score(p, g, tolerance_mm=2.0)
    loose = score(p, g, tolerance_mm=3.0)
    assert tight["per_case"][0]["case"] == "truth"
    assert loose["mean_nsd"] > tight["mean_nsd"]
    assert loose["mean_nsd"] == pytest.approx(1.0)


def _error_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_errors_are_one_line(folders, tmp_path, capsys):
    pred_dir, gt_dir, _, gts = folders
    out = tmp_path / "report.json"

    def run(pred, gt, *extra) -> str:
        return _error_line(capsys, ["score", str(pred), str(gt), "--json", str(out), *extra])

    # shape mismatch
    bad = tmp_path / "shape"
    _write(bad / "amos_0001.nii.gz", np.zeros((20, 18, 5)))
    _write(bad / "amos_0002.nii.gz", gts["amos_0002"])
    assert "shape" in run(bad, gt_dir)
    # affine mismatch (origin moved 1 mm)
    bad = tmp_path / "affine"
    _write(bad / "amos_0001.nii.gz", gts["amos_0001"], _affine(origin=(-9.0, 5.0, 20.0)))
    _write(bad / "amos_0002.nii.gz", gts["amos_0002"])
    assert "affine" in run(bad, gt_dir)
    # ids > 15
    bad = tmp_path / "ids"
    _write(bad / "amos_0001.nii.gz", np.full(SHAPE, 16))
    _write(bad / "amos_0002.nii.gz", gts["amos_0002"])
    assert "0..15" in run(bad, gt_dir)
    # unmatched files both ways
    bad = tmp_path / "unmatched"
    _write(bad / "amos_0001.nii.gz", gts["amos_0001"])
    assert "without a prediction" in run(bad, gt_dir)
    _write(bad / "amos_0009.nii.gz", gts["amos_0001"])
    assert "without a ground-truth" in run(bad, gt_dir)
    # two predictions for one case
    bad = tmp_path / "dup"
    _write(bad / "amos_0001.nii.gz", gts["amos_0001"])
    _write(bad / "amos_0001_seg.nii.gz", gts["amos_0001"])
    assert "two prediction files" in run(bad, gt_dir)
    # empty folder, file vs folder, missing path, negative tolerance
    (tmp_path / "empty").mkdir()
    assert "no .nii" in run(tmp_path / "empty", gt_dir)
    assert "both be files or both be folders" in run(pred_dir / "amos_0001.nii.gz", gt_dir)
    assert "not found" in run(tmp_path / "nope", gt_dir)
    assert not out.exists()


def test_subset_scores_only_predicted_cases(folders, tmp_path):
    _, gt_dir, _, gts = folders
    part = _write(tmp_path / "part" / "amos_0002.nii.gz", gts["amos_0002"]).parent
    with pytest.raises(AmosegError, match="without a prediction"):
        score(part, gt_dir)
    report = score(part, gt_dir, subset=True)
    assert report["n_cases"] == 1 and report["accuracy"] == 1.0 and report["mean_nsd"] == 1.0


def test_truncated_file_exits_2_without_traceback(folders, tmp_path):
    """Issue 9 contract, through a real process: a truncated .nii.gz → one line, exit 2."""
    pred_dir, gt_dir, _, _ = folders
    victim = pred_dir / "amos_0001.nii.gz"
    data = gzip.decompress(victim.read_bytes())
    victim.write_bytes(gzip.compress(data)[: len(gzip.compress(data)) // 2])
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "amoseg", "score", str(pred_dir), str(gt_dir), "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated" in lines[0] and "amos_0001.nii.gz" in lines[0]
    assert not out.exists()


def test_nan_free_json(folders):
    pred_dir, gt_dir, _, _ = folders
    text = json.dumps(score(pred_dir, gt_dir), allow_nan=False)  # raises on NaN/inf
    assert not math.isnan(json.loads(text)["miou"])


def test_spacing_comes_from_the_affine_when_pixdim_disagrees(tmp_path):
    """A tool rewrote the sform (3 mm slices) but left pixdim at 1 mm: HD95 and NSD use the
    affine's spacing, as predict does, and a one-line warning names the file (main took
    pixdim: HD95 in 1 mm slices)."""
    gt, pred = _label(1), np.roll(_label(1), 1, axis=2)  # one slice off: 3 mm, not 1 mm
    for folder, data in (("gt", gt), ("pred", pred), ("gt_ok", gt), ("pred_ok", pred)):
        _write(tmp_path / folder / "amos_0001.nii.gz", data)
    for folder in ("gt", "pred"):
        path = tmp_path / folder / "amos_0001.nii.gz"
        img = nib.load(path)
        img.header["pixdim"][1:4] = 1.0  # the sform keeps SPACING
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), path)
        assert nib.load(path).header.get_zooms() == (1.0, 1.0, 1.0)
    bad = score(tmp_path / "pred", tmp_path / "gt")
    good = score(tmp_path / "pred_ok", tmp_path / "gt_ok")
    assert bad["per_case"][0]["spacing_mm"] == pytest.approx(SPACING)
    assert good["mean_hd95_mm"] > 2.9
    assert bad["mean_hd95_mm"] == pytest.approx(good["mean_hd95_mm"])
    assert bad["mean_nsd"] == pytest.approx(good["mean_nsd"])
    assert len(bad["warnings"]) == 1 and not good["warnings"]
    assert (
        "pixdim (1, 1, 1) mm disagrees with the affine's voxel sizes (0.8, 0.8, 3)"
        in (bad["warnings"][0])
    )
    from tests.badfiles import amoseg_inprocess

    res = amoseg_inprocess("score", tmp_path / "pred", tmp_path / "gt")
    assert res.returncode == 0, res.stderr
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("warning: amos_0001.nii.gz: pixdim"), err
