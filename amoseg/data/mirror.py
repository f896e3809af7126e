"""Mirroring that respects anatomy: along the patient's left–right axis the paired organs
(right/left kidney, right/left adrenal gland) trade places, so their label ids and class
scores must swap too; along any other axis a mirror is a plain flip.

Shared by 3D training augmentation and test-time augmentation, so both apply exactly the
same rule (`amoseg.labels.LEFT_RIGHT_PAIRS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from amoseg.labels import left_right_permutation

LABEL_TABLE = 256


def _permutation(n: int, device: torch.device) -> torch.Tensor:
    return torch.tensor(left_right_permutation(n), device=device)


def _axes(t: torch.Tensor, dims: Sequence[int], lr_dim: int) -> tuple[list[int], bool]:
    axes = sorted({int(d) % t.ndim for d in dims})
    return axes, int(lr_dim) % t.ndim in axes


def mirror_labels(labels: torch.Tensor, dims: Sequence[int], lr_dim: int) -> torch.Tensor:
    """A label map flipped along `dims`; if `lr_dim` is among them, paired ids swapped."""
    axes, swap = _axes(labels, dims, lr_dim)
    if not axes:
        return labels
    out = labels.flip(axes)
    if swap:
        # a 256-entry table covers any uint8 label map without reading its maximum (a sync)
        out = _permutation(LABEL_TABLE, out.device)[out.long()].to(labels.dtype)
    return out


def mirror_scores(
    scores: torch.Tensor, dims: Sequence[int], lr_dim: int, class_dim: int = 1
) -> torch.Tensor:
    """Per-class scores (probabilities or logits) flipped along `dims`; if `lr_dim` is among
    them, the paired classes' channels swapped. Mirroring twice is the identity."""
    axes, swap = _axes(scores, dims, lr_dim)
    if not axes:
        return scores
    out = scores.flip(axes)
    if swap:
        out = out.index_select(class_dim, _permutation(scores.shape[class_dim], out.device))
    return out
