"""A streaming confusion matrix and the pure functions that derive every 2D metric from it.

Accuracy, IoU, Dice, precision and recall all come from the same integer matrix, so they can
never disagree with each other (a table whose accuracy and mIoU come from different sources
can show combinations that no single prediction could produce).

Convention: ``matrix[t, p]`` counts pixels with ground truth ``t`` predicted as ``p``.
"""

from __future__ import annotations

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

        Stays on the tensors' device with no host sync, so it is safe in a GPU hot loop.
        """
        p = torch.as_tensor(pred)
        t = torch.as_tensor(target)
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {tuple(p.shape)} != target {tuple(t.shape)}")
        if self._m.device != p.device:
            self._m = self._m.to(p.device)
        idx = t.reshape(-1).long() * self.num_classes + p.reshape(-1).long()
        self._m += torch.bincount(idx, minlength=self.num_classes**2)
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
