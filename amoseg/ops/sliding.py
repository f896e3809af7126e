"""nnU-Net's sliding-window prediction: its tile steps, Gaussian weighting, mirroring and fold
averaging (of logits, as nnU-Net averages folds), batched over tiles. nnU-Net model folders
run it with nnU-Net's float16 sums (parity); amoseg's own 3D recipes with float32 sums
(`amoseg.ops.inferers.SlidingWindowInferer`)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter


def window_steps(image: Sequence[int], tile: Sequence[int], step: float) -> list[list[int]]:
    """nnU-Net's compute_steps_for_sliding_window."""
    steps = []
    for size, t in zip(image, tile, strict=True):
        n = int(np.ceil((size - t) / (t * step))) + 1
        actual = (size - t) / (n - 1) if n > 1 else 99999999999
        steps.append([int(np.round(actual * i)) for i in range(n)])
    return steps


@lru_cache(maxsize=4)
def _gaussian(tile: tuple[int, ...], sigma_scale: float = 1 / 8) -> np.ndarray:
    """nnU-Net's importance map (sigma 1/8 of the tile, peak 10, held in float16 as nnU-Net
    holds it, zeros replaced by the smallest positive value)."""
    tmp = np.zeros(tile)
    tmp[tuple(i // 2 for i in tile)] = 1
    g = gaussian_filter(tmp, [i * sigma_scale for i in tile], 0, mode="constant", cval=0)
    g = (g / (np.max(g) / 10)).astype(np.float16)
    g[g == 0] = g[g != 0].min()
    return g.astype(np.float32)


def _pad(data: torch.Tensor, tile: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the last len(tile) axes up to the tile (acvl_utils' pad_nd_image split)."""
    spatial = data.shape[-len(tile) :]
    diff = [max(t - s, 0) for s, t in zip(spatial, tile, strict=True)]
    if not any(diff):
        return data, tuple(slice(None) for _ in spatial)
    pad: list[int] = []
    for d in reversed(diff):
        pad += [d // 2, d // 2 + d % 2]
    keep = tuple(slice(d // 2, d // 2 + s) for d, s in zip(diff, spatial, strict=True))
    return F.pad(data, pad, mode="constant", value=0.0), keep


Net = Callable[[torch.Tensor], torch.Tensor]


def _forward(net: Net, x: torch.Tensor, mirror: Sequence[int] | None) -> torch.Tensor:
    """One fold's logits for a batch of tiles, averaged over nnU-Net's mirror combinations."""
    axes = [m + 2 for m in mirror] if mirror else []
    combos = [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
    pred = net(x).float()
    for flip in combos:
        pred += torch.flip(net(torch.flip(x, flip)).float(), flip)
    return pred / (len(combos) + 1)


@torch.no_grad()
def sliding_window_logits(
    nets: Sequence[Net],
    data: torch.Tensor,
    num_classes: int,
    tile: Sequence[int],
    step: float,
    mirror: Sequence[int] | None,
    batch_size: int,
    autocast: torch.dtype | None = None,
    accumulate: torch.dtype = torch.float16,
    sigma_scale: float = 1 / 8,
) -> torch.Tensor:
    """(C, Z, Y, X) preprocessed image → (K, Z, Y, X) logits in `accumulate`, the mean over
    `nets` (networks or predictors: (B, C, *tile) → (B, K, *tile)). A 2D tile runs over
    every slice along the first axis, as nnU-Net's 2d configuration does.

    nnU-Net holds sums and weights in float16 (the default here): where only a tile's far
    corner reaches (the volume's corners), the Gaussian weight is a float16 subnormal and
    nnU-Net's logits carry that rounding; parity needs the same arithmetic."""
    tile = tuple(int(t) for t in tile)
    data, keep = _pad(data, tile)
    spatial = data.shape[1:]
    device = data.device
    if len(tile) == 2:
        steps = window_steps(spatial[1:], tile, step)
        corners = [(d, *c) for d in range(spatial[0]) for c in itertools.product(*steps)]
    else:
        corners = list(itertools.product(*window_steps(spatial, tile, step)))
    gauss32 = torch.from_numpy(_gaussian(tile, sigma_scale)).to(device)  # float16 values

    def region(c: tuple[int, ...]) -> tuple[slice | int, ...]:
        if len(tile) == 2:
            return (c[0], *(slice(s, s + t) for s, t in zip(c[1:], tile, strict=True)))
        return tuple(slice(s, s + t) for s, t in zip(c, tile, strict=True))

    ctx = (
        torch.autocast(device.type, dtype=autocast)
        if autocast is not None
        else torch.autocast(device.type, enabled=False)
    )
    total: torch.Tensor | None = None
    for net in nets:
        logits = torch.zeros((num_classes, *spatial), dtype=accumulate, device=device)
        weight = torch.zeros(spatial, dtype=accumulate, device=device)
        for start in range(0, len(corners), batch_size):
            batch = [region(c) for c in corners[start : start + batch_size]]
            x = torch.stack([data[(slice(None), *r)] for r in batch])
            with ctx:
                pred = _forward(net, x, mirror)
            for r, p in zip(batch, pred, strict=True):
                view = logits[(slice(None), *r)]
                if accumulate == torch.float32:
                    view.add_(p.mul_(gauss32))
                    weight[r].add_(gauss32)
                    continue
                # float16 += float32 is a float32 sum rounded to float16: the same numbers
                # as nnU-Net's in-place add, without the CPU's slow float16 kernels
                view.copy_(view.float().add_(p.mul_(gauss32)))
                weight[r] = weight[r].float().add_(gauss32)
        torch.div(logits, weight, out=logits)
        total = logits if total is None else total.add_(logits)
    assert total is not None
    if len(nets) > 1:
        total /= len(nets)
    return (
        total[(slice(None), *keep)] if len(keep) == 3 else total[(slice(None), slice(None), *keep)]
    )
