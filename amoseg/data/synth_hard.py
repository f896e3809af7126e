"""Harder CT for the synthetic abdomen (`amoseg synth --hard`): what real scans add.

- partial coverage: a scan that stops above the kidneys (upper abdomen) or starts below the
  liver (lower abdomen and pelvis);
- arms down beside the body, inside the field of view (often cut by it);
- metal: a hip prosthesis or spinal screws, with streaks radiating from it in its slices;
- lesions: liver cysts and tumours, kidney cysts; painted inside the organ and labelled as the
  organ, as AMOS labels them (a lesion is part of the organ it lies in);
- dose-dependent correlated noise: a dose factor scales the noise (σ ∝ 1/√dose) and a
  reconstruction-kernel width sets how correlated it is (soft kernels: smoother, coarser).

Everything is drawn from its own random stream, so `--hard` never changes the anatomy a seed
gives without it; only what is added to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amoseg.data.synth_anatomy import LIVER, LKID, RKID, Patient, T
from amoseg.data.synth_shapes import Canvas, Ellipsoid, Tube, rotation


@dataclass
class Lesion:
    shape: Ellipsoid
    label: int  # the organ it lies in: painted only where the organ already is
    tissue: str  # "cyst" or "tumour"


@dataclass
class Metal:
    shape: Ellipsoid
    streak_angles: np.ndarray  # radians, fixed per object so slabs and slices agree
    streak_hu: float


@dataclass
class HardCT:
    """The extras of one hard CT scan (patient-fixed, rendered slab by slab)."""

    coverage: str = "full"  # full, upper (stops above the kidneys), lower (below the liver)
    arms: list[list[tuple[Tube, str]]] = field(default_factory=list)
    lesions: list[Lesion] = field(default_factory=list)
    metal: list[Metal] = field(default_factory=list)
    dose: float = 1.0  # relative to the plain generator's noise
    kernel_sigma: float = 0.6  # voxels: correlation length of the noise

    def describe(self) -> dict:
        return {
            "coverage": self.coverage,
            "arms": bool(self.arms),
            "lesions": sorted(set(f"{les.tissue}:{les.label}" for les in self.lesions)),
            "metal": len(self.metal),
            "dose": round(self.dose, 3),
        }


def sample_hard(p: Patient, rng: np.random.Generator, coverage: bool = True) -> HardCT:
    """Draw the extras and, with `coverage`, a partial coverage applied to `p` (before the
    scan grid is laid out; MR has its own coverage)."""
    hard = HardCT()
    u = rng.random() if coverage else 1.0
    if u < 0.12:  # upper abdomen: stops above the kidneys
        hard.coverage = "upper"
        p.z_bottom = float(rng.uniform(60, 85))
        p.z_top = max(p.z_top, p.z_bottom + 110)
    elif u < 0.24:  # lower abdomen and pelvis: starts below the liver
        hard.coverage = "lower"
        p.z_top = float(rng.uniform(-55, -15))
        p.z_bottom = min(p.z_bottom, -255.0)
    if rng.random() < 0.35:
        hard.arms = _arms(p, rng)
    for _ in range(int(rng.choice([0, 1, 2, 3], p=[0.45, 0.3, 0.15, 0.1]))):
        hard.lesions.append(_lesion(p, rng, LIVER, "cyst", (4, 15)))
    for _ in range(int(rng.choice([0, 1, 2], p=[0.7, 0.2, 0.1]))):
        hard.lesions.append(_lesion(p, rng, LIVER, "tumour", (8, 25)))
    for lab in (RKID, LKID):
        for _ in range(int(rng.choice([0, 1, 2], p=[0.7, 0.2, 0.1]))):
            hard.lesions.append(_lesion(p, rng, lab, "cyst", (5, 18)))
    if rng.random() < 0.15:
        hard.metal = _metal(p, rng)
    hard.dose = float(np.exp(rng.uniform(np.log(0.25), np.log(2.0))))
    hard.kernel_sigma = float(rng.uniform(0.4, 1.6))
    # lesion and metal CT numbers: cysts are water, tumours differ from the enhanced liver
    liver = float(p.hu_mean[T["liver"]])
    p.hu_mean[T["cyst"]] = float(rng.uniform(0, 18))
    p.hu_mean[T["tumour"]] = liver + float(rng.choice([-1, 1], p=[0.7, 0.3]) * rng.uniform(20, 55))
    p.hu_texture[T["tumour"]] = float(rng.uniform(8, 20))
    p.hu_mean[T["metal"]] = 3071.0
    return hard


def _lesion(p: Patient, rng: np.random.Generator, label: int, tissue: str, r_mm) -> Lesion:
    key = {LIVER: "liver", RKID: "rkid", LKID: "lkid"}[label]
    organ = p.organs[key][0]
    local = rng.uniform(-0.55, 0.55, 3) * organ.radii
    centre = organ.center + organ.rot @ local
    r = float(rng.uniform(*r_mm))
    radii = r * np.exp(rng.normal(0, 0.12, 3))
    angles = rng.uniform(-40, 40, 3)
    return Lesion(Ellipsoid(centre, radii, rotation(*angles), 0.04), label, tissue)


def _arms(p: Patient, rng: np.random.Generator) -> list[list[tuple[Tube, str]]]:
    """Two arms down beside the trunk: fat, muscle and a bone shaft, as nested tubes."""
    muscle, t_ant, t_lat, t_post = p.body_layers()
    a, _ = p.cavity_radii(np.array([0.0]))
    half_width = float(a[0] + muscle + t_lat)
    ocy = p.cavity_cy + (t_ant - t_post) / 2
    arms = []
    for side in (1, -1):
        r = float(rng.uniform(38, 50)) * p.scale + 15 * p.fat
        x = side * (half_width + float(rng.uniform(5, 25)) + r)
        y = ocy + float(rng.uniform(-25, 15))
        path = np.array([(x, y, 260.0), (x + side * 5, y + 5, 20.0), (x + side * 10, y + 25, -260)])
        radii = np.array([r, 0.85 * r, 0.7 * r])
        bone = np.array([11.0, 10.0, 9.0]) * p.scale
        arms.append(
            [
                (Tube(path, radii, 0.05), "subq_fat"),
                (Tube(path, radii - 6 - 20 * p.fat, 0.05), "muscle"),
                (Tube(path, bone, 0.02), "bone_cort"),
                (Tube(path, bone - 3, 0.02), "bone_canc"),
            ]
        )
    return arms


def _metal(p: Patient, rng: np.random.Generator) -> list[Metal]:
    """A hip prosthesis head (in a femoral head) or a pair of pedicle screws."""
    s = p.scale
    if rng.random() < 0.5:
        side = float(rng.choice([-1, 1]))
        shapes = [
            Ellipsoid(np.array([side * 88 * s, -10, -282.0]), np.full(3, 21.0) * s, np.eye(3), 0)
        ]
    else:
        z = float(rng.uniform(-100, 40))
        shapes = [
            Ellipsoid(
                np.array([sx * 10 * s, -55 * s, z]),
                np.array([3.5, 22, 3.5]),
                rotation(0, 0, sx * 15),
                0,
            )
            for sx in (1, -1)
        ]
    return [
        Metal(e, rng.uniform(0, np.pi, int(rng.integers(6, 14))), float(rng.uniform(150, 500)))
        for e in shapes
    ]


def paint_hard(p: Patient, hard: HardCT, cv: Canvas) -> None:
    """Paint arms, lesions and metal over a rendered slab (after `render`)."""
    for arm in hard.arms:
        outside = cv.tissue == T["air"]
        for tube, tissue in arm:
            hit = cv.tube(tube)
            if hit is not None:
                blk, m = hit
                cv.paint(blk, m & outside[blk], T[tissue], 0)
    for lesion in hard.lesions:
        hit = cv.ellipsoid(lesion.shape)
        if hit is not None:
            blk, m = hit
            cv.paint(blk, m & (cv.label[blk] == lesion.label), T[lesion.tissue])
    for metal in hard.metal:
        hit = cv.ellipsoid(metal.shape)
        if hit is not None:
            cv.paint(*hit, T["metal"], 0)


def add_streaks(hu: np.ndarray, cv: Canvas, hard: HardCT, sxy: float) -> None:
    """Bright/dark streaks through each metal object, in every axial slice it appears in.

    A line through the object's centre in each fixed direction, alternating sign, fading with
    distance: a cheap stand-in for beam hardening and photon starvation (in place, HU).
    """
    if not hard.metal:
        return
    metal = cv.tissue == T["metal"]
    X, Y = np.meshgrid(cv.axes[0], cv.axes[1], indexing="ij")
    for k in np.flatnonzero(metal.any(axis=(0, 1))):
        ii, jj = np.nonzero(metal[:, :, k])
        cx, cy = float(cv.axes[0][ii].mean()), float(cv.axes[1][jj].mean())
        strength = min(1.0, len(ii) * sxy * sxy / 400.0)  # larger cross-section, more streaks
        dx, dy = X - cx, Y - cy
        r = np.hypot(dx, dy)
        fade = 1.0 / (1.0 + r / 60.0)
        out = np.zeros_like(r)
        for n, theta in enumerate(np.concatenate([m.streak_angles for m in hard.metal])):
            dist = np.abs(dx * np.sin(theta) - dy * np.cos(theta))
            sign = 1.0 if n % 2 == 0 else -1.0
            out += sign * np.exp(-0.5 * (dist / (1.2 * sxy)) ** 2)
        amp = max(m.streak_hu for m in hard.metal) * strength
        streaked = hu[:, :, k].astype(np.float32) + amp * out * fade
        hu[:, :, k] = np.clip(np.rint(streaked), -1024, 3071).astype(hu.dtype)
