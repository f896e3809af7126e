"""Orientation and in-plane resizing shared by `prepare` (forward) and `predict` (inverse).

Volumes are reoriented to RAS+ so axial slices look alike across scans (AMOS mixes LAS and
RAS), then each axial slice is resized to size×size. `predict` undoes both steps exactly,
so a label map lands in the scan's own voxel grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

CANONICAL = ("R", "A", "S")


def to_canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """The axis permutation/flips (nibabel orientation array) from file order to RAS+."""
    return ornt_transform(io_orientation(affine), axcodes2ornt(CANONICAL))


def from_canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """The inverse of `to_canonical_ornt`: RAS+ back to the file's axis order."""
    return ornt_transform(axcodes2ornt(CANONICAL), io_orientation(affine))


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


def canonical_spacing(zooms: tuple[float, ...], affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) in the canonical axis order."""
    ornt = io_orientation(affine)
    out = [0.0, 0.0, 0.0]
    for src_axis, (dst_axis, _flip) in enumerate(ornt):
        out[int(dst_axis)] = float(zooms[src_axis])
    return out[0], out[1], out[2]


def needs_antialias(shape_xy: tuple[int, ...], size: int) -> bool:
    """Antialiasing matters only when a slice shrinks; when enlarging it changes < 0.05 HU
    and costs 1.5–3.5× the plain bilinear time, so `prepare` and `predict` both skip it."""
    return size < max(int(shape_xy[0]), int(shape_xy[1]))


def volume_to_slices(volume: np.ndarray, size: int, is_label: bool) -> np.ndarray:
    """(X, Y, Z) canonical volume → (Z, size, size) stack of axial slices.

    Images use antialiased bilinear (area-like when shrinking); labels use nearest so ids stay
    ids.
    """
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, 2, 0)))[:, None]
    if is_label:
        out = F.interpolate(t.to(torch.uint8), size=(size, size), mode="nearest-exact")
        return out[:, 0].numpy().astype(np.uint8)
    out = F.interpolate(
        t.float(),
        size=(size, size),
        mode="bilinear",
        antialias=needs_antialias(volume.shape, size),
        align_corners=False,
    )
    return out[:, 0].numpy()


def slices_to_volume(slices: np.ndarray, shape_xy: tuple[int, int]) -> np.ndarray:
    """(Z, S, S) label slices → (X, Y, Z) canonical label volume (nearest neighbour)."""
    t = torch.from_numpy(np.ascontiguousarray(slices))[:, None].to(torch.uint8)
    out = F.interpolate(t, size=tuple(shape_xy), mode="nearest-exact")[:, 0]
    return np.ascontiguousarray(np.moveaxis(out.numpy(), 0, 2))


def display_slice(slice_xy: np.ndarray) -> np.ndarray:
    """A canonical (X, Y) slice as a 2D picture in radiological view (anterior up, patient
    right on the viewer's left)."""
    return np.flip(slice_xy.T, axis=(0, 1))
