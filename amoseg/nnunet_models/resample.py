"""nnU-Net 2.8.1's `resample_data_or_seg_to_shape`, reproduced exactly.

Forward (image, spline order 3): scipy's `ndimage.zoom` with the arguments scikit-image's
`resize(mode="edge", anti_aliasing=False)` passes it, clipped to the input's range as
`resize` clips, in float64 — the same numbers nnU-Net gets. Anisotropic spacing (ratio > 3) is
resampled in-plane slice by slice and along the low-resolution axis with `order_z` (0: nearest).

Back (logits, order 1): linear interpolation is separable and clamps at the edges like
`ndimage.zoom(order=1, mode="nearest", grid_mode=True)`, so torch's bilinear resize of each
slice plus a linear or nearest step along axis 0 gives nnU-Net's numbers, chunk by chunk, on
the model's device, without ever holding all classes at full resolution.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

ANISO_THRESHOLD = 3  # nnunetv2.configuration.ANISO_THRESHOLD


def _lowres_axes(spacing: Sequence[float]) -> np.ndarray:
    return np.where(max(spacing) / np.array(spacing) == 1)[0]


def separate_z_axis(
    force_separate_z: bool | None, current: Sequence[float], new: Sequence[float]
) -> int | None:
    """The axis resampled on its own (None: all axes together), as nnU-Net decides it."""
    if force_separate_z is not None:
        axes = _lowres_axes(current) if force_separate_z else None
    elif max(current) / min(current) > ANISO_THRESHOLD:
        axes = _lowres_axes(current)
    elif max(new) / min(new) > ANISO_THRESHOLD:
        axes = _lowres_axes(new)
    else:
        axes = None
    if axes is None or len(axes) != 1:
        return None
    return int(axes[0])


def new_shape_for(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    """nnU-Net's compute_new_shape: round(old spacing / new spacing * size) per axis."""
    return tuple(round(i / j * k) for i, j, k in zip(spacing, target, shape, strict=True))


def _resize(image: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """skimage.transform.resize(image, shape, order, mode='edge', anti_aliasing=False)."""
    zoom = [1 / (i / o) for i, o in zip(image.shape, shape, strict=True)]
    out = ndimage.zoom(image, zoom, order=order, mode="nearest", cval=0, grid_mode=True)
    if order > 0:
        np.clip(out, image.min(), image.max(), out=out)
    return out


def _axis_positions(n_in: int, n_out: int) -> np.ndarray:
    """Source coordinates of each output index along one axis (pixel centres aligned)."""
    scale = float(n_in) / n_out
    return scale * (np.arange(n_out) + 0.5) - 0.5


def _nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """map_coordinates(order=0, mode='nearest')'s choice of source index per output index."""
    coords = _axis_positions(n_in, n_out)
    picked = ndimage.map_coordinates(
        np.arange(n_in, dtype=float), [coords], order=0, mode="nearest"
    )
    return picked.astype(np.int64)


def resample_image(
    data: np.ndarray,
    new_shape: Sequence[int],
    current: Sequence[float],
    new: Sequence[float],
    order: int = 3,
    order_z: int = 0,
    force_separate_z: bool | None = None,
) -> np.ndarray:
    """(C, *shape) float32 → (C, *new_shape) float32, nnU-Net's image resampling."""
    shape = np.array(data.shape[1:])
    target = np.array(new_shape)
    if np.all(shape == target):
        return data
    axis = separate_z_axis(force_separate_z, current, new)
    out = np.zeros((data.shape[0], *target), dtype=data.dtype)
    work = data.astype(float, copy=False)
    for c in range(data.shape[0]):
        if axis is None:
            out[c] = _resize(work[c], target, order)
            continue
        plane = [int(s) for i, s in enumerate(target) if i != axis]
        moved = np.moveaxis(work[c], axis, 0)
        here = np.stack([_resize(s, plane, order) for s in moved])  # (shape[axis], *plane)
        if shape[axis] != target[axis]:
            here = _along_axis0(here, int(target[axis]), order_z)
        out[c] = np.moveaxis(here, 0, axis)
    return out


def _along_axis0(here: np.ndarray, n_out: int, order_z: int) -> np.ndarray:
    if order_z == 0:
        return here[_nearest_indices(here.shape[0], n_out)]
    if order_z != 1:
        raise ValueError(f"order_z {order_z} is not supported (0 or 1)")
    pos = np.clip(_axis_positions(here.shape[0], n_out), 0, here.shape[0] - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, here.shape[0] - 1)
    w = (pos - lo).reshape(-1, *([1] * (here.ndim - 1)))
    return here[lo] * (1 - w) + here[hi] * w


def _axis0_plan(n_in: int, n_out: int, linear: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index along axis 0: (lower source, upper source, weight of the upper)."""
    if n_in == n_out:
        idx = np.arange(n_out)
        return idx, idx, np.zeros(n_out)
    if not linear:
        idx = _nearest_indices(n_in, n_out)
        return idx, idx, np.zeros(n_out)
    pos = np.clip(_axis_positions(n_in, n_out), 0, n_in - 1)
    lo = np.floor(pos).astype(np.int64)
    return lo, np.minimum(lo + 1, n_in - 1), pos - lo


#: working memory of one chunk of `resample_logits_chunks` (the largest single allocation of
#: prediction for a many-class model on a full-resolution grid)
CHUNK_BYTES = 1 << 30


def resample_logits_chunks(
    logits: torch.Tensor,
    new_shape: Sequence[int],
    current: Sequence[float],
    new: Sequence[float],
    order_z: int = 0,
    force_separate_z: bool | None = None,
    chunk: int | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """(K, *shape) logits → (start, (K, n, *new_shape[1:]) float32) chunks along axis 0 of
    nnU-Net's order-1 resampling to `new_shape` (its `resampling_fn_probabilities`). Each
    output slice depends only on its own source slices, so the chunk size (default: as many
    slices as fit `CHUNK_BYTES` of working copies, at most 8) changes memory, not results:
    a 117-class model on a 512² grid works one slice at a time."""
    shape = tuple(int(s) for s in logits.shape[1:])
    target = tuple(int(s) for s in new_shape)
    axis = separate_z_axis(force_separate_z, current, new) if shape != target else None
    if axis not in (None, 0) or len(shape) != 3:
        raise ValueError("separate resampling along an axis other than the first")
    if axis == 0 and order_z not in (0, 1):
        raise ValueError(f"order_z {order_z} is not supported (0 or 1)")
    # float64 as nnU-Net computes (exact rounding to float16 after), where float64 is cheap
    work = torch.float64 if logits.device.type == "cpu" else torch.float32
    if chunk is None:  # source slices, both interpolation ends and the blend: ≈ 5 copies
        per_slice = (
            5 * logits.shape[0] * target[1] * target[2] * (8 if work == torch.float64 else 4)
        )
        chunk = max(1, min(8, CHUNK_BYTES // max(per_slice, 1)))
    lo, hi, w = _axis0_plan(shape[0], target[0], linear=axis is None or order_z == 1)
    for start in range(0, target[0], chunk):
        stop = min(start + chunk, target[0])
        need = sorted(set(lo[start:stop].tolist()) | set(hi[start:stop].tolist()))
        where = {s: i for i, s in enumerate(need)}
        src = logits[:, need].to(work).transpose(0, 1)  # (n_src, K, h, w)
        if src.shape[-2:] != target[1:]:
            src = F.interpolate(src, size=target[1:], mode="bilinear", align_corners=False)
        a = torch.as_tensor([where[int(i)] for i in lo[start:stop]], device=src.device)
        b = torch.as_tensor([where[int(i)] for i in hi[start:stop]], device=src.device)
        wt = torch.as_tensor(w[start:stop], dtype=work, device=src.device)
        wt = wt.view(-1, 1, 1, 1)
        out = src[a] * (1 - wt) + src[b] * wt if bool((wt > 0).any()) else src[a]
        # nnU-Net resamples float16 logits into a float16 array: the same rounding here
        yield start, out.transpose(0, 1).to(logits.dtype).float()
