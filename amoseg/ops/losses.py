"""Losses of the two U-Net recipes.

`unet-seed` (the report): cross-entropy weighted inversely to each class's pixel frequency in
the training split. `unet` (modern): soft Dice + cross-entropy (MONAI's DiceCELoss), which
optimises overlap directly and is insensitive to the 95 % background.

Deep supervision (`unet3d`, and `unet` with `deep_supervision`) as nnU-Net: each decoder
head's logits stay at their own resolution and are scored against the target downsampled to
it (nearest, as nnU-Net's `DownsampleSegForDSTransform`), weights 1/2^k for the k-th coarser
head, the coarsest 0, normalised to sum 1. Upsampling every head to full size instead costs
3x the loss time in 3D.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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


def deep_supervision_weights(n: int) -> list[float]:
    """nnU-Net's weights for `n` decoder outputs, full resolution first: 1/2^k, the lowest
    resolution 0 (when n > 1), normalised to sum 1."""
    w = [1 / 2**k for k in range(n)]
    if n > 1:
        w[-1] = 0.0
    total = sum(w)
    return [v / total for v in w]


def downsample_labels(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(B, *S) integer labels → (B, *shape) by nearest-exact sampling (nnU-Net's targets)."""
    if tuple(target.shape[1:]) == tuple(shape):
        return target
    small = F.interpolate(target[:, None].float(), size=tuple(shape), mode="nearest-exact")
    return small[:, 0].to(target.dtype)


def deep_supervision_loss(
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    outputs: Sequence[torch.Tensor],
    target: torch.Tensor,
    weights: Sequence[float],
) -> torch.Tensor:
    """Σ_k w_k · loss(output_k, target downsampled to output_k). A head of weight 0 adds
    0 · its sum, so every parameter still takes part in the graph (DDP requires it)."""
    total = torch.zeros((), device=target.device)
    for w, out in zip(weights, outputs, strict=True):
        if w == 0:
            total = total + 0.0 * out.float().sum()
        else:
            total = total + w * loss(out, downsample_labels(target, out.shape[2:]))
    return total
