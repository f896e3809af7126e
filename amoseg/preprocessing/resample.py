"""Torch resampling of z-first volumes, on whatever device the tensor lives.

The working layout is z-first, (Z, X, Y) of the RAS+ grid (or (C, Z, X, Y) for scores):
axial slices are contiguous, which is how the store keeps them and how a 2D network reads
them. Every resize uses `align_corners=False` (voxel centres at (i + 0.5) · step), so a
resize from n to m voxels and back from m to n maps each voxel centre onto itself: that is
what makes `Preprocessor.invert` an exact geometric inverse.

Images: bilinear in-plane, antialiased when either axis shrinks (area-like; when enlarging it
changes < 0.05 HU and costs 1.5–3.5× the plain bilinear time), linear along z. Labels:
nearest (`nearest-exact`), so ids stay ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

INT16_MIN, INT16_MAX = -32768.0, 32767.0


def needs_antialias(shape_xy: Sequence[int], target_xy: Sequence[int] | int) -> bool:
    """Antialias only when a slice shrinks along some axis (see the module docstring)."""
    if isinstance(target_xy, int):
        target_xy = (target_xy, target_xy)
    return any(int(t) < int(s) for s, t in zip(shape_xy[:2], target_xy, strict=True))


def resize_inplane(slices: torch.Tensor, shape_xy: Sequence[int], *, label: bool) -> torch.Tensor:
    """(Z, X, Y) → (Z, X', Y'): float32 bilinear for images, uint8 nearest for labels.

    A (C, Z, X, Y) score tensor is resized channel by channel (bilinear, no antialias:
    probabilities are smooth already).
    """
    target = (int(shape_xy[0]), int(shape_xy[1]))
    if label:
        t = slices.to(torch.uint8)[:, None]
        if tuple(t.shape[-2:]) == target:
            return t[:, 0]
        return F.interpolate(t, size=target, mode="nearest-exact")[:, 0]
    if slices.ndim == 4:  # (C, Z, X, Y) scores: Z as batch, C as channels
        z_first = slices.permute(1, 0, 2, 3).float()
        if tuple(z_first.shape[-2:]) != target:
            z_first = F.interpolate(z_first, size=target, mode="bilinear", align_corners=False)
        return z_first.permute(1, 0, 2, 3)
    t = slices[:, None].float()
    if tuple(t.shape[-2:]) == target:
        return t[:, 0].contiguous()
    out = F.interpolate(
        t,
        size=target,
        mode="bilinear",
        antialias=needs_antialias(slices.shape[-2:], target),
        align_corners=False,
    )
    return out[:, 0]


def resized_argmax(scores: torch.Tensor, shape_xy: Sequence[int]) -> torch.Tensor:
    """(C, Z, X, Y) scores → (Z, X', Y') uint8: the arg-max over C of the scores' bilinear
    resize to X'×Y' (`resize_inplane`), without resizing all C channels at full size.

    Bilinear resizing makes each output pixel a weighted mean, with weights ≥ 0, of 2×2
    source pixels; where those four share their arg-max class, every class's score is
    below that class's in each of them, so also in their mean: the output pixel is that
    class. Only pixels whose sources disagree (organ borders) get their C scores
    interpolated, one pixel at a time. On a 6 mm → 0.8 mm predict this does a tenth of the
    work of `resize_inplane(...).argmax(0)`, which it matches up to float rounding at
    near-ties (tests/test_resized_argmax.py)."""
    n_x, n_y = scores.shape[-2:]
    tx, ty = int(shape_xy[0]), int(shape_xy[1])
    # float32 taps, as F.interpolate's bilinear CPU kernel computes them
    x0, x1, wx = z_weights(n_x, tx, scores.device, torch.float32)
    y0, y1, wy = z_weights(n_y, ty, scores.device, torch.float32)
    low = scores.argmax(0).to(torch.uint8)  # (Z, X, Y)
    rows0, rows1 = low[:, x0], low[:, x1]  # (Z, X', Y)
    out = rows0[:, :, y0]
    mixed = (out != rows0[:, :, y1]) | (out != rows1[:, :, y0]) | (out != rows1[:, :, y1])
    z, i, j = mixed.nonzero(as_tuple=True)
    if len(z):
        a, b, c, d = (x0[i], y0[j]), (x0[i], y1[j]), (x1[i], y0[j]), (x1[i], y1[j])
        fx, fy = wx[i], wy[j]

        def tap(xy: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return scores[:, z, xy[0], xy[1]].float()  # (C, n)

        value = (1 - fx) * ((1 - fy) * tap(a) + fy * tap(b)) + fx * (
            (1 - fy) * tap(c) + fy * tap(d)
        )
        out[z, i, j] = value.argmax(0).to(torch.uint8)
    return out


def z_weights(
    n_in: int, n_out: int, device: torch.device, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, ...]:
    """Linear interpolation along an axis (z, or one in-plane axis) with
    `align_corners=False`: for each output plane the two source planes and the weight of the
    second (F.interpolate's 'linear' convention), the positions computed in `dtype`."""
    scale = n_in / n_out
    src = ((torch.arange(n_out, device=device, dtype=dtype) + 0.5) * scale - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    return lo, hi, (src - lo).float()


def nearest_z(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """Source plane of each output plane for nearest-exact resampling along z."""
    idx = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out)).floor()
    return idx.long().clamp(max=n_in - 1)


def resize_z(volume: torch.Tensor, n_out: int, *, label: bool) -> torch.Tensor:
    """Resample along the z axis (axis 0 of (Z, X, Y); axis 1 of (C, Z, X, Y))."""
    axis = 0 if volume.ndim == 3 else 1
    n_in = int(volume.shape[axis])
    if n_in == n_out:
        return volume if label else volume.float()
    if label:
        return volume.index_select(axis, nearest_z(n_in, n_out, volume.device))
    lo, hi, w = z_weights(n_in, n_out, volume.device)
    shape = [1] * volume.ndim
    shape[axis] = n_out
    w = w.view(shape)
    a = volume.index_select(axis, lo).float()
    b = volume.index_select(axis, hi).float()
    return a.mul_(1 - w).add_(b * w)


def round_int16(image: torch.Tensor) -> torch.Tensor:
    """Round to the int16 store's values in place (half to even, as NumPy's rint) and clamp."""
    return image.round_().clamp_(INT16_MIN, INT16_MAX)
