"""RAS+ reorientation of torch tensors (any device), the inverse, and the RAS+ grid's affine.

AMOS mixes LAS and RAS files; every stage works on the RAS+ grid so axial slices look alike.
The permutation/flips are nibabel's orientation arrays, applied here
as torch views and flips so the same code serves the CPU (prepare) and the GPU (predict).
"""

from __future__ import annotations

import numpy as np
import torch
from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

CANONICAL = ("R", "A", "S")

TORCH_DTYPES = tuple(
    np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.int32, np.int64, np.float32, np.float64)
)


def to_canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """The axis permutation/flips (nibabel orientation array) from file order to RAS+."""
    return ornt_transform(io_orientation(affine), axcodes2ornt(CANONICAL))


def from_canonical_ornt(affine: np.ndarray) -> np.ndarray:
    """The inverse of `to_canonical_ornt`: RAS+ back to the file's axis order."""
    return ornt_transform(axcodes2ornt(CANONICAL), io_orientation(affine))


def canonical_spacing(zooms: tuple[float, ...], affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel spacing (mm) in the canonical axis order."""
    ornt = io_orientation(affine)
    out = [0.0, 0.0, 0.0]
    for src_axis, (dst_axis, _flip) in enumerate(ornt):
        out[int(dst_axis)] = float(zooms[src_axis])
    return out[0], out[1], out[2]


def apply_orientation_tensor(t: torch.Tensor, ornt: np.ndarray) -> torch.Tensor:
    """`nibabel.orientations.apply_orientation` for the last three axes of a torch tensor
    (leading axes, e.g. classes, are kept)."""
    lead = t.ndim - 3
    for axis, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            t = t.flip(lead + axis)
    order = [lead + int(a) for a in np.argsort(ornt[:, 0])]
    return t.permute(*range(lead), *order)


def as_tensor(data: np.ndarray) -> torch.Tensor:
    """The voxels as a CPU tensor, without a copy when torch can hold them as they are
    (nibabel hands out Fortran-ordered arrays: torch keeps the strides, no transpose-copy)."""
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    if data.dtype not in TORCH_DTYPES:
        # torch lacks uint16/uint32 and float16 ops: widen, keeping integers integers (the
        # store rounds integer sources to int16 but keeps float sources' precision)
        data = data.astype(np.int64 if np.issubdtype(data.dtype, np.integer) else np.float32)
    if any(stride < 0 for stride in data.strides):
        data = np.ascontiguousarray(data)
    return torch.from_numpy(data)


def to_canonical_tensor(t: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """(..., X, Y, Z) in file order → RAS+ (`geometry.to_canonical` on a tensor)."""
    return apply_orientation_tensor(t, to_canonical_ornt(affine))


def from_canonical_tensor(t: torch.Tensor, affine: np.ndarray) -> torch.Tensor:
    """(..., X, Y, Z) RAS+ → the file's axis order; `affine` is the file's."""
    return apply_orientation_tensor(t, from_canonical_ornt(affine))


def canonical_affine(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The affine of the RAS+ reoriented array (what `nibabel.as_closest_canonical` gives)."""
    ornt = to_canonical_ornt(affine)
    return np.asarray(affine, dtype=np.float64) @ inv_ornt_aff(ornt, tuple(shape[:3]))
