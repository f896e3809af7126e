"""Per-volume 3D metrics in millimetres: Dice, IoU, normalized surface Dice (NSD) and HD95.

Definitions follow MONAI's defaults (``compute_surface_dice(use_subvoxels=False)``,
``compute_hausdorff_distance(percentile=95)``), so numbers are comparable with the field:

- the *surface* of a mask is its voxels with at least one 6-neighbour outside the mask
  (``mask & ~binary_erosion(mask)``, cross structuring element, outside the image counts as
  background);
- surface distances are exact Euclidean distances in mm (voxel index x spacing) from each
  surface voxel of one mask to the nearest surface voxel of the other (k-d tree);
- NSD = (#pred-surface voxels within tolerance + #GT-surface voxels within tolerance) /
  (#pred-surface voxels + #GT-surface voxels); a surface voxel counts once whatever its area
  (DeepMind's surface-distance weights surfels by area instead; see docs/metrics.md);
- HD95 = max(95th percentile of pred→GT distances, 95th percentile of GT→pred distances),
  percentiles linearly interpolated (numpy's and torch.quantile's default).

Empty masks (docs/metrics.md): both empty → the class is *absent*: every metric NaN and the
class is left out of means. One empty → Dice = IoU = NSD = 0 and HD95 = +inf.

Surfaces are extracted on the crop of the union bounding box plus a 1-voxel margin; this is
exact (every surface voxel of both masks lies inside the crop) and makes small organs cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import KDTree

from amoseg.labels import NUM_CLASSES
from amoseg.metrics.confusion import confusion_matrix

METRIC_KEYS = ("dice", "iou", "nsd", "hd95")
# A distance mathematically equal to the tolerance (e.g. sqrt(1.6² + 1.2²) = 2 mm) must count
# as within it whatever the float rounding; 1 nm of slack decides no real case otherwise.
TOLERANCE_SLACK_MM = 1e-6


def mask_surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask: inside, with a face-neighbour outside."""
    mask = np.asarray(mask, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """(pred→GT, GT→pred) distances in mm from each surface voxel to the other surface.

    Both masks must be non-empty. The crop to the union's bounding box keeps it exact and fast.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth {gt.shape}")
    if len(spacing) != pred.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {pred.ndim}D masks")
    if not pred.any() or not gt.any():
        raise ValueError("surface distances need two non-empty masks")
    box = _union_box(pred, gt)
    return _cropped_distances(pred[box], gt[box], spacing)


def normalized_surface_dice(
    d_pred_gt: np.ndarray, d_gt_pred: np.ndarray, tolerance_mm: float
) -> float:
    """Fraction of both surfaces lying within `tolerance_mm` of the other surface."""
    total = d_pred_gt.size + d_gt_pred.size
    if total == 0:
        return math.nan
    tol = tolerance_mm + TOLERANCE_SLACK_MM
    ok = np.count_nonzero(d_pred_gt <= tol) + np.count_nonzero(d_gt_pred <= tol)
    return float(ok / total)


def hausdorff95(d_pred_gt: np.ndarray, d_gt_pred: np.ndarray) -> float:
    """Symmetric 95th-percentile Hausdorff distance (max of the two directed percentiles)."""
    if d_pred_gt.size == 0 or d_gt_pred.size == 0:
        return math.inf
    return float(max(np.percentile(d_pred_gt, 95), np.percentile(d_gt_pred, 95)))


def volume_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float = 2.0,
    classes: Iterable[int] = range(1, NUM_CLASSES),
    matrix: np.ndarray | None = None,
) -> dict[int, dict[str, float]]:
    """Dice, IoU, NSD and HD95 (mm) of each class of one volume, plus voxel counts.

    `pred` and `gt` are integer label maps (ids 0..15) on the same grid; `spacing` is the
    voxel size per array axis in mm. `matrix` may pass the volume's confusion matrix if the
    caller already has it. Returns ``{class: {"dice", "iou", "nsd", "hd95", "gt_voxels",
    "pred_voxels", "absent"}}`` where "absent" is 1.0 when the class is in neither map.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth {gt.shape}")
    if len(spacing) != gt.ndim:
        raise ValueError(f"spacing {tuple(spacing)} does not match {gt.ndim}D label maps")
    if tolerance_mm < 0 or not math.isfinite(tolerance_mm):
        raise ValueError(f"tolerance must be a finite number of mm >= 0, got {tolerance_mm}")
    m = confusion_matrix(pred, gt) if matrix is None else np.asarray(matrix, dtype=np.int64)
    classes = [int(c) for c in classes]
    # Bounding boxes of every label in one pass per map (find_objects), not one per class.
    boxes_pred = _label_boxes(pred)
    boxes_gt = _label_boxes(gt)
    out: dict[int, dict[str, float]] = {}
    for c in classes:
        tp = int(m[c, c])
        n_gt, n_pred = int(m[c].sum()), int(m[:, c].sum())
        row: dict[str, float] = {"gt_voxels": n_gt, "pred_voxels": n_pred, "absent": 0.0}
        if n_gt == 0 and n_pred == 0:
            row.update({k: math.nan for k in METRIC_KEYS}, absent=1.0)
        elif n_gt == 0 or n_pred == 0:
            row.update(dice=0.0, iou=0.0, nsd=0.0, hd95=math.inf)
        else:
            row["dice"] = 2 * tp / (n_gt + n_pred)
            row["iou"] = tp / (n_gt + n_pred - tp)
            box = _merge_boxes(boxes_pred[c], boxes_gt[c], gt.shape)
            d_pg, d_gp = _cropped_distances(pred[box] == c, gt[box] == c, spacing)
            row["nsd"] = normalized_surface_dice(d_pg, d_gp, tolerance_mm)
            row["hd95"] = hausdorff95(d_pg, d_gp)
        out[c] = row
    return out


def _cropped_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Exact nearest-surface distances via k-d trees over the surface voxels' mm coordinates.

    Surfaces are sparse, so this is 2-3x faster than two dense distance transforms of the
    crop (and gives the same distances, to rounding; see tests).
    """
    scale = np.asarray(spacing, dtype=np.float64)
    pts_pred = np.argwhere(mask_surface(pred)) * scale
    pts_gt = np.argwhere(mask_surface(gt)) * scale
    d_pg = KDTree(pts_gt, leafsize=32).query(pts_pred, k=1)[0]
    d_gp = KDTree(pts_pred, leafsize=32).query(pts_gt, k=1)[0]
    return np.asarray(d_pg, dtype=np.float64), np.asarray(d_gp, dtype=np.float64)


def _label_boxes(labels: np.ndarray) -> list[tuple[slice, ...] | None]:
    """Index c → bounding box of label c (None when absent); index 0 unused."""
    lab = labels if labels.dtype.kind in "iu" else labels.astype(np.int64)
    if lab.flags.f_contiguous and not lab.flags.c_contiguous:
        # NIfTI arrays are Fortran-ordered: scan the C-ordered transpose, then flip the boxes.
        found = ndimage.find_objects(lab.T, max_label=NUM_CLASSES)
        return [None, *(box[::-1] if box is not None else None for box in found)]
    return [None, *ndimage.find_objects(lab, max_label=NUM_CLASSES)]


def _merge_boxes(
    a: tuple[slice, ...] | None, b: tuple[slice, ...] | None, shape: tuple[int, ...]
) -> tuple[slice, ...]:
    """Union of two boxes plus a 1-voxel margin (so erosion sees background around masks)."""
    boxes = [x for x in (a, b) if x is not None]
    if not boxes:  # background (find_objects skips label 0): use the whole volume
        return tuple(slice(0, n) for n in shape)
    return tuple(
        slice(max(min(s[d].start for s in boxes) - 1, 0), min(max(s[d].stop for s in boxes) + 1, n))
        for d, n in enumerate(shape)
    )


def _union_box(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, ...]:
    union = (pred | gt).astype(np.uint8)
    (box,) = ndimage.find_objects(union, max_label=1)
    return _merge_boxes(box, None, pred.shape)
