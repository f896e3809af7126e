"""Orientation and in-plane resizing shared by `prepare` (forward) and `predict` (inverse).

Volumes are reoriented to RAS+ so axial slices look alike across scans (AMOS mixes LAS and
RAS), then each axial slice is resized to size×size. `predict` undoes both steps exactly,
so a label map lands in the scan's own voxel grid.

The resampling itself is `amoseg.preprocessing` (one torch implementation for CPU and GPU);
these are NumPy-facing wrappers for callers that hold arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from nibabel.orientations import apply_orientation

from amoseg.preprocessing.orient import (  # noqa: F401 - re-exported: callers import them here
    CANONICAL,
    canonical_spacing,
    from_canonical_ornt,
    to_canonical_ornt,
)
from amoseg.preprocessing.resample import needs_antialias, resize_inplane  # noqa: F401


def canonical_view(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """`to_canonical` as a flipped/permuted view, without a copy.

    NIfTI voxels load Fortran-ordered, so making a whole canonical volume C-contiguous is a slow
    strided copy; callers that need only some slices gather those from the view.
    """
    return apply_orientation(data, to_canonical_ornt(affine))


def to_canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Permute/flip voxel axes so the array is RAS+ (axis 2 = axial slices)."""
    return np.ascontiguousarray(canonical_view(data, affine))


def from_canonical(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Inverse of `to_canonical` for an array in RAS+ order; `affine` is the original's.

    Extra leading axes are not supported: pass (X, Y, Z) arrays only.
    """
    return np.ascontiguousarray(apply_orientation(data, from_canonical_ornt(affine)))


def volume_to_slices(volume: np.ndarray, size: int, is_label: bool) -> np.ndarray:
    """(X, Y, Z) canonical volume → (Z, size, size) stack of axial slices.

    Images use antialiased bilinear (area-like when shrinking); labels use nearest so ids stay
    ids.
    """
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, 2, 0)))
    return resize_inplane(t, (size, size), label=is_label).numpy()


def slices_to_volume(slices: np.ndarray, shape_xy: tuple[int, int]) -> np.ndarray:
    """(Z, S, S) label slices → (X, Y, Z) canonical label volume (nearest neighbour)."""
    t = torch.from_numpy(np.ascontiguousarray(slices))
    return np.ascontiguousarray(np.moveaxis(resize_inplane(t, shape_xy, label=True).numpy(), 0, 2))


def display_slice(slice_xy: np.ndarray) -> np.ndarray:
    """A canonical (X, Y) slice as a 2D picture in radiological view (anterior up, patient
    right on the viewer's left)."""
    return np.flip(slice_xy.T, axis=(0, 1))


def array_order(size: Sequence[int]) -> tuple[int, ...]:
    """A patch size as amoseg writes it everywhere — plan.json, `--patch-size`, a recipe's
    `patch_size` — is (x, y[, z]) voxels along the RAS+ axes, like the spacing; the stored
    and predicted volumes are arrays (Z, X, Y). This is the one conversion: (x, y, z) →
    (z, x, y); a 2D (x, y) stays as it is."""
    values = tuple(int(n) for n in size)
    if len(values) == 3:
        x, y, z = values
        return (z, x, y)
    return values
