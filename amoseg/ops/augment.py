"""Batch augmentation for the modern U-Net, run on the training device (GPU when present).

Spatial: random rotation, isotropic scaling and a smooth elastic displacement, applied to the
image (bilinear) and the label map (nearest) through one sampling grid. Intensity: contrast /
brightness, gamma, Gaussian noise. There is deliberately NO left/right flip: left and right
kidneys and adrenal glands are different classes, so a mirrored image has different labels.

All randomness comes from the `torch.Generator` passed in (seeded per epoch and rank by the
trainer), so a resumed run sees exactly the augmentations an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    elastic: float = 0.03  # displacement std as a fraction of the half image width
    elastic_grid: int = 5
    p_spatial: float = 0.8
    contrast: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_std: float = 0.05


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, dev: torch.device):
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=dev)


def augment_batch(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, C, H, W) normalised float, y (B, H, W) int64 → augmented copies."""
    b, dev = x.shape[0], x.device
    x = x.float()
    # --- spatial: one grid per sample (identity for samples that skip it)
    angle = _uniform(b, -cfg.rotate_deg, cfg.rotate_deg, gen, dev) * (math.pi / 180)
    scale = _uniform(b, *cfg.scale, gen, dev)
    on = (torch.rand(b, generator=gen, device=dev) < cfg.p_spatial).float()
    angle, scale = angle * on, 1 + (scale - 1) * on
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    g = cfg.elastic_grid
    coarse = torch.randn(b, 2, g, g, generator=gen, device=dev) * cfg.elastic
    disp = F.interpolate(coarse, size=x.shape[-2:], mode="bicubic", align_corners=False)
    grid = grid + disp.permute(0, 2, 3, 1) * on.view(b, 1, 1, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(
        y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[:, 0].long()
    # --- intensity
    view = (b, 1, 1, 1)
    x = x * _uniform(b, *cfg.contrast, gen, dev).view(view)
    x = x + _uniform(b, -cfg.brightness, cfg.brightness, gen, dev).view(view)
    gamma_on = torch.rand(b, generator=gen, device=dev) < cfg.p_gamma
    gamma = torch.where(gamma_on, _uniform(b, *cfg.gamma, gen, dev), torch.ones(b, device=dev))
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    span = (x.amax(dim=(1, 2, 3), keepdim=True) - lo).clamp_min(1e-6)
    x = ((x - lo) / span).pow(gamma.view(view)) * span + lo
    sigma = _uniform(b, 0, cfg.noise_std, gen, dev).view(view)
    x = x + sigma * torch.randn(x.shape, generator=gen, device=dev)
    return x, y
