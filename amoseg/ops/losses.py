"""Losses of the two U-Net recipes.

`unet-seed` (the report): cross-entropy weighted inversely to each class's pixel frequency in
the training split. `unet` (modern): soft Dice + cross-entropy (MONAI's DiceCELoss), which
optimises overlap directly and is insensitive to the 95 % background.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def inverse_frequency_weights(counts: np.ndarray) -> list[float]:
    """w_c ∝ 1 / frequency_c, normalised to mean 1 over the classes present in training;
    classes absent from the training split get weight 0 (they never occur as targets)."""
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    w = np.zeros_like(counts)
    w[present] = counts[present].sum() / counts[present]
    if present.any():
        w[present] /= w[present].mean()
    return [float(v) for v in w]


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target, weight=weights.to(logits.device))


class DiceCE(torch.nn.Module):
    """MONAI DiceCELoss on integer label maps (one-hot and softmax inside), in fp32."""

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0):
        super().__init__()
        from monai.losses import DiceCELoss

        # batch=True: Dice over the whole batch per class (nnU-Net's "batch Dice"). Per-slice
        # Dice punishes any probability on a class absent from that slice with a loss near 1,
        # which in 2D (most organs absent from most slices) drives small organs to zero early.
        self.inner = DiceCELoss(
            to_onehot_y=True,
            softmax=True,
            batch=True,
            lambda_dice=lambda_dice,
            lambda_ce=lambda_ce,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.inner(logits.float(), target[:, None])
