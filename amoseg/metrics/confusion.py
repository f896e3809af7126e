"""A streaming confusion matrix and the pure functions that derive every 2D metric from it.

Accuracy, IoU, Dice, precision and recall all come from the same integer matrix, so they can
never disagree with each other (a table whose accuracy and mIoU come from different sources
can show combinations that no single prediction could produce).

Convention: ``matrix[t, p]`` counts pixels with ground truth ``t`` predicted as ``p``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from amoseg.labels import NUM_CLASSES


class ConfusionMatrix:
    """Accumulates a (C, C) int64 matrix from batches of label maps on CPU or GPU."""

    def __init__(self, num_classes: int = NUM_CLASSES, device: str | torch.device = "cpu"):
        self.num_classes = num_classes
        self._m = torch.zeros(num_classes * num_classes, dtype=torch.int64, device=device)

    def update(self, pred: Any, target: Any) -> ConfusionMatrix:
        """Add one batch; `pred` and `target` are integer label maps of equal shape.

        On GPU it stays on the tensors' device with no host sync (scatter_add into C*C bins),
        so it is safe in a hot loop; ids outside 0..C-1 are then the caller's bug. On CPU the
        ids are range-checked (cheap) and counted with a uint8 bincount when C*C <= 256, which
        is ~10x faster than building an int64 index.
        """
        p, t = _as_label_tensor(pred), _as_label_tensor(target)
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {tuple(p.shape)} != target {tuple(t.shape)}")
        if t.device != p.device:
            t = t.to(p.device)
        if self._m.device != p.device:
            self._m = self._m.to(p.device)
        n = self.num_classes
        if p.device.type == "cpu":
            _check_ids(p, n, "prediction")
            _check_ids(t, n, "target")
            if n * n <= 256:
                idx = t.to(torch.uint8) * n
                idx += p.to(torch.uint8)
            else:
                idx = t.long() * n + p.long()
            self._m += torch.bincount(_flat_in_memory_order(idx), minlength=n * n)
        else:
            idx = t.reshape(-1).long() * n + p.reshape(-1).long()
            self._m.scatter_add_(0, idx, torch.ones_like(idx))
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self._m += other._m.to(self._m.device)
        return self

    def all_reduce(self) -> ConfusionMatrix:
        """Sum across DDP ranks (no-op when torch.distributed is not initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self._m, op=dist.ReduceOp.SUM)
        return self

    def reset(self) -> None:
        self._m.zero_()

    @property
    def matrix(self) -> np.ndarray:
        return self._m.view(self.num_classes, self.num_classes).cpu().numpy().copy()


def _as_label_tensor(x: Any) -> torch.Tensor:
    """A tensor view of a label map; numpy arrays are shared, not copied, where torch allows."""
    if isinstance(x, torch.Tensor):
        return x
    a = np.asarray(x)
    if a.dtype in (np.uint16, np.uint32, np.uint64):
        # AMOS ships uint16 labels; torch has few ops for wide unsigned ints, so cast (to
        # uint8 when the ids fit, else int64; the range check then still sees large ids).
        top = int(a.max()) if a.size else 0
        if top > np.iinfo(np.int64).max:
            raise ValueError(f"label id {top} too large")
        a = a.astype(np.uint8 if top < 256 else np.int64)
    if any(s < 0 for s in a.strides):
        a = np.ascontiguousarray(a)
    with warnings.catch_warnings():
        # Read-only arrays (memmaps) are shared without a copy; we never write to them.
        warnings.simplefilter("ignore", UserWarning)
        return torch.as_tensor(a)


def _flat_in_memory_order(x: torch.Tensor) -> torch.Tensor:
    """A 1D view in storage order; counting ignores order, and a C-order reshape of a
    Fortran-ordered volume (nibabel's NIfTI arrays) would be a slow strided copy."""
    order = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    v = x.permute(order)
    return v.view(-1) if v.is_contiguous() else x.reshape(-1)


def _check_ids(x: torch.Tensor, n: int, what: str) -> None:
    if x.numel() == 0:
        return
    if x.is_floating_point() and not bool(torch.equal(x, torch.round(x))):
        raise ValueError(f"{what} holds non-integer labels")
    if x.dtype == torch.bool:
        return
    lo, hi = torch.aminmax(_flat_in_memory_order(x))
    if int(lo) < 0 or int(hi) >= n:
        raise ValueError(f"{what} label ids {int(lo)}..{int(hi)} outside 0..{n - 1}")


def confusion_matrix(pred: Any, target: Any, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """The (C, C) int64 matrix ``[true, pred]`` of one pair of label maps (numpy or torch)."""
    return ConfusionMatrix(num_classes).update(pred, target).matrix


def _as_matrix(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    return cm.matrix if isinstance(cm, ConfusionMatrix) else np.asarray(cm, dtype=np.int64)


def pixel_accuracy(cm: ConfusionMatrix | np.ndarray) -> float:
    m = _as_matrix(cm)
    total = m.sum()
    return float(np.trace(m) / total) if total else float("nan")


def present_classes(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """Classes seen in ground truth or prediction; the others are excluded from means."""
    m = _as_matrix(cm)
    return (m.sum(axis=0) + m.sum(axis=1)) > 0


def iou_per_class(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """TP / (TP + FP + FN) per class; NaN where the class is absent from both maps."""
    m = _as_matrix(cm).astype(np.float64)
    tp = np.diag(m)
    denom = m.sum(axis=0) + m.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def dice_per_class(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    """2TP / (2TP + FP + FN) per class; NaN where the class is absent from both maps."""
    m = _as_matrix(cm).astype(np.float64)
    tp = np.diag(m)
    denom = m.sum(axis=0) + m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def precision_per_class(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    m = _as_matrix(cm).astype(np.float64)
    col = m.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(col > 0, np.diag(m) / col, np.nan)


def recall_per_class(cm: ConfusionMatrix | np.ndarray) -> np.ndarray:
    m = _as_matrix(cm).astype(np.float64)
    row = m.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(row > 0, np.diag(m) / row, np.nan)


def mean_iou(cm: ConfusionMatrix | np.ndarray, organs_only: bool = False) -> float:
    """Mean IoU over present classes: all 16 (the report's definition) or the 15 organs."""
    iou = iou_per_class(cm)
    if organs_only:
        iou = iou[1:]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def mean_dice(cm: ConfusionMatrix | np.ndarray, organs_only: bool = True) -> float:
    dice = dice_per_class(cm)
    if organs_only:
        dice = dice[1:]
    return float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")


def json_number(x: float) -> float | None:
    """JSON has no NaN/inf: undefined (absent) and infinite values become null."""
    return round(float(x), 6) if np.isfinite(x) else None


def matrix_summary(cm: ConfusionMatrix | np.ndarray) -> dict[str, Any]:
    """Headline metrics and a per-class table from one matrix, JSON-ready (NaN → None).

    Shared by `amoseg evaluate` (slices of a store) and `amoseg score` (NIfTI label maps),
    so both report the same quantities under the same names.
    """
    from amoseg.labels import CLASS_NAMES

    m = _as_matrix(cm)
    iou, dice = iou_per_class(m), dice_per_class(m)
    prec, rec = precision_per_class(m), recall_per_class(m)
    truth, pred = m.sum(axis=1), m.sum(axis=0)
    per_class = [
        {
            "id": c,
            "name": CLASS_NAMES[c] if c < len(CLASS_NAMES) else str(c),
            # absent = in neither truth nor prediction: excluded from the means.
            "absent": bool(truth[c] == 0 and pred[c] == 0),
            "gt_voxels": int(truth[c]),
            "pred_voxels": int(pred[c]),
            "iou": json_number(iou[c]),
            "dice": json_number(dice[c]),
            "precision": json_number(prec[c]),
            "recall": json_number(rec[c]),
        }
        for c in range(m.shape[0])
    ]
    return {
        "accuracy": json_number(pixel_accuracy(m)),
        "miou": json_number(mean_iou(m)),
        "miou_organs": json_number(mean_iou(m, organs_only=True)),
        "mean_dice": json_number(mean_dice(m)),
        "per_class": per_class,
    }
