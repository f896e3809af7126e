"""Score NIfTI label maps against ground truth: one dataset matrix plus per-case 3D metrics.

Works for any tool's outputs on the AMOS label set (e.g. nnU-Net's ``amos_0001.nii.gz`` or
``amos_0001_seg.nii.gz`` against AMOS's ``labelsVa/amos_0001.nii.gz``). Dataset-level accuracy,
IoU and Dice come from one confusion matrix summed over every voxel of every case (the
report's definition, and the only way accuracy and mIoU stay mutually consistent); NSD and
HD95 are per-case surface metrics averaged over the cases where the class is present.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import write_json, write_text
from amoseg.data.nifti import (
    case_id_of,
    is_nifti_path,
    label_array,
    load_nifti,
    pixdim_note,
    voxel_spacing,
)
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES, NUM_CLASSES, ORGAN_IDS
from amoseg.metrics.confusion import (
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    json_number,
    matrix_summary,
    mean_dice,
    mean_iou,
    pixel_accuracy,
)
from amoseg.metrics.surface import volume_metrics

PRED_SUFFIXES = ("_seg",)  # prediction names that map onto a label name without it
AFFINE_ATOL_MM = 1e-3  # float32 round trips through other tools (SimpleITK) stay well inside
CSV_COLUMNS = (
    "case",
    "class_id",
    "class_name",
    "absent",
    "gt_voxels",
    "pred_voxels",
    "iou",
    "dice",
    "nsd",
    "hd95_mm",
)


@dataclass(frozen=True)
class CasePair:
    case_id: str
    pred: Path
    gt: Path


def _strip_pred_suffix(case_id: str) -> str:
    for suffix in PRED_SUFFIXES:
        if case_id.endswith(suffix) and len(case_id) > len(suffix):
            return case_id[: -len(suffix)]
    return case_id


def _index_folder(folder: Path, what: str, strip: bool) -> dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti_path(p))
    if not files:
        raise AmosegError(f"no .nii/.nii.gz files in {what} folder", folder)
    index: dict[str, Path] = {}
    for path in files:
        key = case_id_of(path)
        if strip:
            key = _strip_pred_suffix(key)
        if key in index:
            raise AmosegError(
                f"two {what} files for case {key} ({index[key].name}, {path.name})",
                folder,
                "keep one file per case",
            )
        index[key] = path
    return index


def match_cases(pred: str | Path, gt: str | Path, subset: bool = False) -> list[CasePair]:
    """Pair prediction and ground-truth files: two files, or two folders matched by name.

    In folders, ``CASE.nii.gz`` and ``CASE_seg.nii.gz`` predictions both match ``CASE.nii.gz``.
    Every prediction needs a label; every label needs a prediction unless `subset` (then only
    the predicted cases are scored).
    """
    pred, gt = Path(pred), Path(gt)
    for path, what in ((pred, "prediction"), (gt, "ground truth")):
        if not path.exists():
            raise AmosegError(f"{what} path not found", path)
    if pred.is_file() and gt.is_file():
        return [CasePair(case_id_of(gt), pred, gt)]
    if pred.is_dir() != gt.is_dir():
        raise AmosegError(
            "PRED and GT must both be files or both be folders",
            pred if pred.is_file() else gt,
        )
    preds = _index_folder(pred, "prediction", strip=True)
    gts = _index_folder(gt, "ground truth", strip=False)
    no_gt = sorted(set(preds) - set(gts))
    if no_gt:
        raise AmosegError(
            f"{len(no_gt)} prediction(s) without a ground-truth file (e.g. {preds[no_gt[0]].name})",
            gt,
            "name predictions like the labels, optionally with a _seg suffix",
        )
    no_pred = sorted(set(gts) - set(preds))
    if no_pred and not subset:
        raise AmosegError(
            f"{len(no_pred)} ground-truth case(s) without a prediction "
            f"(e.g. {gts[no_pred[0]].name})",
            pred,
            "predict every case, or pass --subset to score only the predicted cases",
        )
    return [CasePair(case, preds[case], gts[case]) for case in sorted(preds)]


def load_truth(
    path: Path, notes: list[str] | None = None, lut: tuple[int, ...] | None = None
) -> tuple[np.ndarray, tuple[float, ...]]:
    """A ground-truth label map as uint8 AMOS ids (through the dataset's `lut` when its ids
    differ), and its voxel spacing in mm.

    Spacing comes from the affine, as `predict` and `prepare` take it; a pixdim that
    disagrees adds a line to `notes`.
    """
    gt_img = load_nifti(path, "ground-truth label")
    if notes is not None:
        notes.extend(n for n in (pixdim_note(gt_img, path),) if n)
    return label_array(gt_img, path, lut), voxel_spacing(gt_img)


def load_pair(
    pair: CasePair, notes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """Both label maps as uint8 on the same grid, and the voxel spacing in mm (the ground
    truth's affine; see `load_truth`)."""
    gt_img = load_nifti(pair.gt, "ground-truth label")
    pred_img = load_nifti(pair.pred, "prediction")
    if pred_img.shape != gt_img.shape:
        raise AmosegError(
            f"prediction shape {pred_img.shape} != ground truth {gt_img.shape} ({pair.gt.name})",
            pair.pred,
            "resample the prediction onto the label's grid",
        )
    if not np.allclose(pred_img.affine, gt_img.affine, rtol=0, atol=AFFINE_ATOL_MM):
        worst = float(np.abs(pred_img.affine - gt_img.affine).max())
        raise AmosegError(
            f"prediction affine differs from the ground truth's by up to {worst:.4g} "
            f"({pair.gt.name})",
            pair.pred,
            "the prediction must be on the label's grid and orientation",
        )
    gt = label_array(gt_img, pair.gt)
    pred = label_array(pred_img, pair.pred)
    if notes is not None:
        notes.extend(n for n in (pixdim_note(gt_img, pair.gt),) if n)
    return pred, gt, voxel_spacing(gt_img)


def score_case(
    pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float = 2.0
) -> tuple[np.ndarray, dict[int, dict[str, float]]]:
    """(confusion matrix, per-organ 3D metrics) of one case."""
    m = confusion_matrix(pred, gt)
    return m, volume_metrics(pred, gt, spacing, tolerance_mm, ORGAN_IDS, matrix=m)


def _case_record(pair: CasePair, m: np.ndarray, spacing, per_class) -> dict[str, Any]:
    iou, dice = iou_per_class(m), dice_per_class(m)
    truth_px, pred_px = m.sum(axis=1), m.sum(axis=0)
    classes = []
    for c in range(NUM_CLASSES):
        row = per_class.get(c, {})
        classes.append(
            {
                "id": c,
                "name": CLASS_NAMES[c],
                "absent": bool(truth_px[c] == 0 and pred_px[c] == 0),
                "gt_voxels": int(truth_px[c]),
                "pred_voxels": int(pred_px[c]),
                "iou": json_number(iou[c]),
                "dice": json_number(dice[c]),
                "nsd": json_number(row.get("nsd", math.nan)),
                "hd95_mm": json_number(row.get("hd95", math.nan)),
            }
        )
    organ = [per_class[c] for c in ORGAN_IDS]
    return {
        "case": pair.case_id,
        "pred": str(pair.pred),
        "gt": str(pair.gt),
        "spacing_mm": [round(s, 6) for s in spacing],
        "accuracy": json_number(pixel_accuracy(m)),
        "miou": json_number(mean_iou(m)),
        "miou_organs": json_number(mean_iou(m, organs_only=True)),
        "mean_dice": json_number(mean_dice(m)),
        "mean_nsd": json_number(_nanmean([r["nsd"] for r in organ])),
        "mean_hd95_mm": json_number(_finite_mean([r["hd95"] for r in organ])),
        "per_class": classes,
    }


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _finite_mean(values: list[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


def summarize(total: np.ndarray, cases: list[dict[str, Any]], tolerance_mm: float) -> dict:
    """The report: dataset-matrix metrics, per-class values and the per-case records."""
    headline = matrix_summary(total)
    per_class = headline["per_class"]
    for c, entry in enumerate(per_class):
        rows = [case["per_class"][c] for case in cases if not case["per_class"][c]["absent"]]
        entry["n_cases"] = len(rows)
        if c in ORGAN_IDS:
            hd = [r["hd95_mm"] for r in rows]
            entry.update(
                {
                    "case_dice": json_number(_nanmean([r["dice"] for r in rows])),
                    "nsd": json_number(_nanmean([r["nsd"] for r in rows])),
                    "hd95_mm": json_number(_finite_mean([h for h in hd if h is not None])),
                    "n_hd95_infinite": sum(h is None for h in hd),
                }
            )
    organs = [e for e in per_class if e["id"] in ORGAN_IDS]
    return {
        "n_cases": len(cases),
        "tolerance_mm": tolerance_mm,
        "accuracy": headline["accuracy"],
        "miou": headline["miou"],
        "miou_organs": headline["miou_organs"],
        "mean_dice": headline["mean_dice"],
        "mean_case_dice": json_number(_nanmean([_nan(e["case_dice"]) for e in organs])),
        "mean_nsd": json_number(_nanmean([_nan(e["nsd"]) for e in organs])),
        "mean_hd95_mm": json_number(_nanmean([_nan(e["hd95_mm"]) for e in organs])),
        "definitions": {
            "accuracy, miou, miou_organs, mean_dice, iou, dice": "from one confusion matrix "
            "summed over all voxels of all cases; miou over the 16 classes (report's definition), "
            "miou_organs and mean_dice over the 15 organs; classes absent from both maps excluded",
            "case_dice, nsd, hd95_mm": "per-case 3D metrics averaged over the cases where the "
            "class is present in ground truth or prediction; hd95 mean over finite values, "
            "n_hd95_infinite counts cases where one mask is empty (HD95 = inf)",
            "nsd": f"normalized surface Dice at {tolerance_mm} mm (MONAI definition)",
        },
        "per_class": per_class,
        "per_case": cases,
        "confusion_matrix": total.tolist(),
    }


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def score_loaded(
    loaded: Iterable[tuple[CasePair, np.ndarray, np.ndarray, tuple[float, ...]]],
    tolerance_mm: float = 2.0,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score (pair, prediction, ground truth, spacing) cases one at a time, as they come
    (one volume pair in memory); returns the report. `amoseg evaluate` feeds predictions
    straight from `segment_scan` here, `score_pairs` feeds them from files."""
    if not math.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise AmosegError(f"tolerance must be a finite number >= 0 mm, got {tolerance_mm}")
    total = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    cases = []
    for pair, p, g, spacing in loaded:
        m, per_class = score_case(p, g, spacing, tolerance_mm)
        total += m
        cases.append(_case_record(pair, m, spacing, per_class))
        if on_case is not None:
            on_case(pair.case_id)
    return summarize(total, cases, tolerance_mm)


def score_pairs(
    pairs: list[CasePair],
    tolerance_mm: float = 2.0,
    on_case: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Score matched file pairs one at a time (one volume pair in memory); returns the report,
    with `warnings` for files whose pixdim disagrees with their affine."""
    notes: list[str] = []
    report = score_loaded(
        ((pair, *load_pair(pair, notes)) for pair in pairs), tolerance_mm, on_case
    )
    report["warnings"] = notes
    return report


def score(
    pred: str | Path, gt: str | Path, tolerance_mm: float = 2.0, subset: bool = False
) -> dict[str, Any]:
    """Score PRED against GT (two files or two folders); returns the JSON-ready report."""
    return score_pairs(match_cases(pred, gt, subset=subset), tolerance_mm)


def write_report_json(report: dict[str, Any], target: str | Path) -> None:
    write_json(target, report)


def write_report_csv(report: dict[str, Any], target: str | Path) -> None:
    """One row per case per class; empty cells where a metric is undefined (or infinite)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for case in report["per_case"]:
        for row in case["per_class"]:
            hd = row["hd95_mm"]
            if hd is None and row["id"] in ORGAN_IDS and not row["absent"]:
                hd = "inf"  # one mask empty: the distance to an empty surface is unbounded
            writer.writerow(
                [
                    case["case"],
                    row["id"],
                    row["name"],
                    int(row["absent"]),
                    row["gt_voxels"],
                    row["pred_voxels"],
                    *("" if v is None else v for v in (row["iou"], row["dice"], row["nsd"], hd)),
                ]
            )
    write_text(target, buf.getvalue())
