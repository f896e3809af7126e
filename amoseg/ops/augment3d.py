"""3D patch augmentation for `unet3d`, run on the training device (GPU when present).

nnU-Net's set, in one pass per batch: rotation (mostly in-plane: scans are often thick-sliced)
and scaling through one affine grid, a smooth elastic displacement, mirroring along each axis
(along the patient's left–right axis the paired organs' labels swap, see
`amoseg.data.mirror`), then intensity: contrast / brightness, gamma, Gaussian noise and
low-resolution simulation (down-sample, then up-sample again).

All randomness comes from the `torch.Generator` passed in (seeded per epoch and rank by the
trainer), so a resumed run sees exactly the augmentations an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from amoseg.data.mirror import mirror_labels


@dataclass(frozen=True)
class Augment3dConfig:
    #: max rotation (degrees) about the first (slice) axis, i.e. in-plane, and the others
    rotate_inplane_deg: float = 30.0
    rotate_other_deg: float = 10.0
    scale: tuple[float, float] = (0.85, 1.2)
    elastic: float = 0.03  # displacement std as a fraction of the half patch width
    elastic_grid: int = 4
    p_spatial: float = 0.8
    p_mirror: float = 0.5  # per axis
    contrast: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.1
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    noise_std: float = 0.05
    p_lowres: float = 0.25
    lowres: tuple[float, float] = (1.0, 2.0)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, dev: torch.device):
    return lo + (hi - lo) * torch.rand(n, generator=gen, device=dev)


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(B, 3) angles (radians) about the grid's z, y, x → (B, 3, 3) rotation matrices."""
    c, s = torch.cos(angles), torch.sin(angles)
    one, zero = torch.ones_like(c[:, 0]), torch.zeros_like(c[:, 0])

    def mat(rows):
        return torch.stack([torch.stack(r, -1) for r in rows], -2)

    # affine_grid's coordinates are (x, y, z) = (W, H, D): rotation "in-plane" turns x and y
    rz = mat([[c[:, 0], -s[:, 0], zero], [s[:, 0], c[:, 0], zero], [zero, zero, one]])
    ry = mat([[c[:, 1], zero, s[:, 1]], [zero, one, zero], [-s[:, 1], zero, c[:, 1]]])
    rx = mat([[one, zero, zero], [zero, c[:, 2], -s[:, 2]], [zero, s[:, 2], c[:, 2]]])
    return rz @ ry @ rx


def augment_patches(
    x: torch.Tensor,
    y: torch.Tensor,
    gen: torch.Generator,
    lr_dim: int,
    cfg: Augment3dConfig = Augment3dConfig(),
    *,
    extra: torch.Tensor | None = None,
) -> Any:
    """x (B, C, D, H, W) normalised float, y (B, D, H, W) int64 → augmented copies.

    `lr_dim` is the patient's left–right axis among the spatial axes (0, 1 or 2). `extra`
    (B, D, H, W) int64: a second label map (a cascade's previous-stage labels) moved exactly
    as `y` (nearest, paired organs swapped when mirrored); then (x, y, extra) is returned.
    """
    b, dev = x.shape[0], x.device
    x = x.float()
    # --- spatial: one grid per sample (identity for samples that skip it)
    on = (torch.rand(b, generator=gen, device=dev) < cfg.p_spatial).float()
    limits = torch.tensor(
        [cfg.rotate_inplane_deg, cfg.rotate_other_deg, cfg.rotate_other_deg], device=dev
    ) * (math.pi / 180)
    angles = (2 * torch.rand(b, 3, generator=gen, device=dev) - 1) * limits * on[:, None]
    scale = 1 + (_uniform(b, *cfg.scale, gen, dev) - 1) * on
    theta = torch.cat([_rotation(angles) / scale.view(b, 1, 1), x.new_zeros(b, 3, 1)], 2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    g = cfg.elastic_grid
    coarse = torch.randn(b, 3, g, g, g, generator=gen, device=dev) * cfg.elastic
    disp = F.interpolate(coarse, size=x.shape[-3:], mode="trilinear", align_corners=False)
    grid = grid + disp.permute(0, 2, 3, 4, 1) * on.view(b, 1, 1, 1, 1)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(
        y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[:, 0].long()
    if extra is not None:
        extra = F.grid_sample(
            extra[:, None].float(), grid, mode="nearest", padding_mode="zeros",
            align_corners=False,
        )[:, 0].long()  # fmt: skip
    es = list(extra.unbind(0)) if extra is not None else []
    # --- mirroring, per sample and axis; the left-right axis swaps paired labels
    flips = (torch.rand(b, 3, generator=gen, device=dev) < cfg.p_mirror).tolist()
    xs, ys = list(x.unbind(0)), list(y.unbind(0))
    for i, row in enumerate(flips):
        axes = [a for a in range(3) if row[a]]
        if axes:
            xs[i] = xs[i].flip([a + 1 for a in axes])
            ys[i] = mirror_labels(ys[i], axes, lr_dim)
            if es:
                es[i] = mirror_labels(es[i], axes, lr_dim)
    # --- low-resolution simulation: down-sample (nearest), back up (trilinear)
    factors = _uniform(b, *cfg.lowres, gen, dev)
    lowres = (torch.rand(b, generator=gen, device=dev) < cfg.p_lowres).tolist()
    for i, (do, f) in enumerate(zip(lowres, factors.tolist(), strict=True)):
        if do and f > 1.0:
            size = [max(1, round(n / f)) for n in xs[i].shape[-3:]]
            small = F.interpolate(xs[i][None], size=size, mode="nearest")
            xs[i] = F.interpolate(small, size=xs[i].shape[-3:], mode="trilinear")[0]
    x, y = torch.stack(xs), torch.stack(ys)
    # --- intensity
    view = (b, 1, 1, 1, 1)
    x = x * _uniform(b, *cfg.contrast, gen, dev).view(view)
    x = x + _uniform(b, -cfg.brightness, cfg.brightness, gen, dev).view(view)
    gamma_on = torch.rand(b, generator=gen, device=dev) < cfg.p_gamma
    gamma = torch.where(gamma_on, _uniform(b, *cfg.gamma, gen, dev), torch.ones(b, device=dev))
    lo = x.amin(dim=(1, 2, 3, 4), keepdim=True)
    span = (x.amax(dim=(1, 2, 3, 4), keepdim=True) - lo).clamp_min(1e-6)
    x = ((x - lo) / span).pow(gamma.view(view)) * span + lo
    sigma = _uniform(b, 0, cfg.noise_std, gen, dev).view(view)
    x = x + sigma * torch.randn(x.shape, generator=gen, device=dev)
    if extra is not None:
        return x, y, torch.stack(es)
    return x, y
