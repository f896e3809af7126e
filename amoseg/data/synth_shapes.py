"""Vectorised shape primitives for the synthetic abdomen, evaluated on a slab of voxels.

Anatomy is described in a patient frame in millimetres (x toward the patient's right, y
anterior, z superior — the NIfTI RAS+ world axes) and evaluated on the voxels of one slab.
Each primitive is tested only inside its own bounding box, so a scan with ~100 structures
costs a few full-volume passes, not one per structure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Block = tuple[slice, slice, slice]


def rotation(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0) -> np.ndarray:
    """Rotation matrix Rz @ Ry @ Rx (angles in degrees); columns are the local axes."""
    a, b, c = np.deg2rad([rx, ry, rz])
    rot_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rot_y = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rot_z = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


@dataclass
class Ellipsoid:
    """A rotated ellipsoid; `rough` wobbles its surface with the patient's smooth noise field."""

    center: np.ndarray
    radii: np.ndarray
    rot: np.ndarray
    rough: float = 0.08

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        half = np.sqrt(((self.rot * self.radii[None, :]) ** 2).sum(axis=1)) * (1 + 3 * self.rough)
        return self.center - half, self.center + half


@dataclass
class Tube:
    """A polyline of capsules with linearly varying radius (vessels, gut, ducts)."""

    points: np.ndarray  # (n, 3) mm
    radii: np.ndarray  # (n,) mm
    rough: float = 0.06

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.radii.max() * (1 + 3 * self.rough)
        return self.points.min(axis=0) - r, self.points.max(axis=0) + r


class SmoothField:
    """Smooth random fields on a coarse lattice in patient mm, sampled trilinearly.

    Used for elastic deformation and organ-surface roughness: fields move with the patient,
    so a case looks the same whichever slab or orientation it is rendered in.
    """

    def __init__(self, rng: np.random.Generator, lo, hi, spacing: float, count: int):
        self.lo = np.asarray(lo, dtype=np.float64)
        self.spacing = spacing
        shape = np.ceil((np.asarray(hi) - self.lo) / spacing).astype(int) + 2
        raw = rng.standard_normal((count, *shape)).astype(np.float32)
        fields = []
        for f in raw:
            f = ndimage.gaussian_filter(f, sigma=1.5, mode="nearest")
            fields.append(f / max(float(f.std()), 1e-6))
        self.values = np.stack(fields)

    def sample_grid(self, axes: list[np.ndarray]) -> np.ndarray:
        """All fields at the voxel grid spanned by 1D patient-coordinate `axes`.

        Trilinear interpolation done as three small matrix products (the grid is separable),
        ~20× faster than map_coordinates over every voxel; returns (count, nx, ny, nz).
        """
        out = self.values
        for axis, (coords, origin) in enumerate(zip(axes, self.lo, strict=True)):
            n = out.shape[axis + 1]
            pos = np.clip((np.asarray(coords, np.float64) - origin) / self.spacing, 0, n - 1)
            i0 = np.minimum(np.floor(pos).astype(int), n - 2)
            frac = pos - i0
            w = np.zeros((len(pos), n), np.float32)
            w[np.arange(len(pos)), i0] = 1 - frac
            w[np.arange(len(pos)), i0 + 1] += frac
            out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis + 1])), 0, axis + 1)
        return np.ascontiguousarray(out, dtype=np.float32)


class Canvas:
    """The voxels of one slab: warped patient coordinates, and tissue/label arrays to paint.

    `axes` are the un-warped patient coordinates of the voxel centres along each array axis
    (all increasing: the slab is rendered in RAS+ order); `P` the warped ones used to test
    shapes; `margin` bounds |P - p| so bounding-box lookups stay conservative.
    """

    def __init__(self, axes: list[np.ndarray], P: list[np.ndarray], rough: np.ndarray):
        self.axes = axes
        self.P = P
        self.rough = rough
        shape = P[0].shape
        self.tissue = np.zeros(shape, dtype=np.uint8)
        self.label = np.zeros(shape, dtype=np.uint8)
        grids = np.meshgrid(*axes, indexing="ij", sparse=True)
        self.margin = [float(np.abs(p - g).max()) + 1.0 for p, g in zip(P, grids, strict=True)]

    def block(self, lo, hi) -> Block | None:
        out = []
        for axis, (a, m) in enumerate(zip(self.axes, self.margin, strict=True)):
            i0 = int(np.searchsorted(a, lo[axis] - m, side="left"))
            i1 = int(np.searchsorted(a, hi[axis] + m, side="right"))
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return out[0], out[1], out[2]

    def coords(self, blk: Block) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.P[0][blk], self.P[1][blk], self.P[2][blk]

    # -- primitives -----------------------------------------------------------------------

    def ellipsoid(self, e: Ellipsoid, scale: float = 1.0) -> tuple[Block, np.ndarray] | None:
        """Mask of `e` (radii × scale) over its bounding block."""
        blk = self.block(*e.bounds())
        if blk is None:
            return None
        return blk, self.ellipsoid_q(e, blk) < (scale * (1 + e.rough * self.rough[blk])) ** 2

    def ellipsoid_q(self, e: Ellipsoid, blk: Block) -> np.ndarray:
        """Normalised squared radius of `e` (1 on the surface) over `blk`."""
        X, Y, Z = self.coords(blk)
        dx, dy, dz = X - e.center[0], Y - e.center[1], Z - e.center[2]
        q = np.zeros(dx.shape, dtype=np.float32)
        for k in range(3):
            r = e.rot[:, k]
            local = r[0] * dx + r[1] * dy + r[2] * dz
            q += (local / e.radii[k]) ** 2
        return q

    def tube(
        self, t: Tube, scale: float = 1.0, offset: float = 0.0, blk: Block | None = None
    ) -> tuple[Block, np.ndarray] | None:
        """Mask of the tube (radius × scale + offset mm) over its bounding block (or `blk`)."""
        if blk is None:
            blk = self.block(*t.bounds())
            if blk is None:
                return None
        mask = np.zeros(tuple(s.stop - s.start for s in blk), dtype=bool)
        for i in range(len(t.points) - 1):
            p0, p1 = t.points[i], t.points[i + 1]
            r0, r1 = t.radii[i] * scale + offset, t.radii[i + 1] * scale + offset
            if max(r0, r1) <= 0:
                continue
            rr = max(r0, r1) * (1 + 3 * t.rough)
            sub = self.block(np.minimum(p0, p1) - rr, np.maximum(p0, p1) + rr)
            if sub is None:
                continue
            # intersect the segment's block with the tube's block
            inner = []
            for s, b in zip(sub, blk, strict=True):
                a0, a1 = max(s.start, b.start), min(s.stop, b.stop)
                if a1 <= a0:
                    break
                inner.append(slice(a0, a1))
            if len(inner) != 3:
                continue
            seg: Block = (inner[0], inner[1], inner[2])
            X, Y, Z = self.coords(seg)
            d = p1 - p0
            dd = float(d @ d) or 1e-6
            u = np.clip(((X - p0[0]) * d[0] + (Y - p0[1]) * d[1] + (Z - p0[2]) * d[2]) / dd, 0, 1)
            dist2 = (X - p0[0] - u * d[0]) ** 2 + (Y - p0[1] - u * d[1]) ** 2
            dist2 += (Z - p0[2] - u * d[2]) ** 2
            r = (r0 + u * (r1 - r0)) * (1 + t.rough * self.rough[seg])
            local = tuple(
                slice(a.start - b.start, a.stop - b.start) for a, b in zip(seg, blk, strict=True)
            )
            mask[local] |= dist2 < np.maximum(r, 0) ** 2
        return blk, mask

    def paint(
        self,
        blk: Block,
        mask: np.ndarray,
        tissue: int | None = None,
        label: int | None = None,
    ) -> None:
        if tissue is not None:
            self.tissue[blk][mask] = tissue
        if label is not None:
            self.label[blk][mask] = label
