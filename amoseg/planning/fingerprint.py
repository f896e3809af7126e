"""The dataset fingerprint: what the planner decides from (nnU-Net's first step).

Per case: voxel spacing (mm, from the affine, RAS+ x, y, z), shape (RAS+), the body's box
(CT: the largest connected region above -500 HU in the axial maximum projection; MR: the
whole grid) and modality. For CT, intensities under the organ labels are sampled (up to
`SAMPLES_PER_CASE` voxels per case, seeded) and summarised once over all cases: mean, std and
the 0.5 / 99.5 percentiles that the CT normalisation clips to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.data.amos import AmosCase, open_case
from amoseg.data.nifti import image_array
from amoseg.preprocessing.crop import body_box
from amoseg.preprocessing.orient import canonical_spacing
from amoseg.preprocessing.preprocessor import Preprocessor

#: voxels above this are body (CT): air is ≈ -1000 HU, fat ≈ -100 HU.
BODY_HU = -500.0
SAMPLES_PER_CASE = 10_000


@dataclass(frozen=True)
class CaseFingerprint:
    case_id: str
    modality: str
    spacing: tuple[float, float, float]  # mm, RAS+ (x, y, z), from the affine
    shape: tuple[int, int, int]  # RAS+ (X, Y, Z)
    body_box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # [start, stop) per axis
    foreground_voxels: int

    @property
    def body_shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in self.body_box)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Intensity:
    """Foreground (organ) intensity statistics of the CT cases."""

    mean: float
    std: float
    p00_5: float
    p99_5: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Fingerprint:
    cases: tuple[CaseFingerprint, ...]
    ct_foreground: Intensity | None

    def spacings(self) -> np.ndarray:
        return np.array([c.spacing for c in self.cases], dtype=np.float64)

    def body_shapes(self) -> np.ndarray:
        return np.array([c.body_shape for c in self.cases], dtype=np.float64)

    def modalities(self) -> list[str]:
        return sorted({c.modality for c in self.cases})

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases": [c.to_dict() for c in self.cases],
            "ct_foreground": None if self.ct_foreground is None else self.ct_foreground.to_dict(),
        }


def affine_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel sizes from the affine's columns (not pixdim), in RAS+ axis order."""
    affine = np.asarray(affine, dtype=np.float64)
    zooms = tuple(float(z) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return canonical_spacing(zooms, affine)


def fingerprint_case(case: AmosCase, index: int) -> tuple[CaseFingerprint, np.ndarray]:
    """One case's fingerprint and its sampled foreground intensities (empty for MR)."""
    label, image_nii = open_case(case)
    affine = np.asarray(image_nii.affine, dtype=np.float64)
    image = image_array(image_nii, case.image)
    del image_nii
    orient = Preprocessor(spacing=(None, None, None))
    canon = orient.canonical(image, affine)
    shape = tuple(int(n) for n in canon.shape)
    box = [(0, n) for n in shape]
    if case.modality == "ct":
        found = body_box(canon.permute(2, 0, 1), BODY_HU, multiple=1)
        if found is not None:
            box[0], box[1] = (found[0].start, found[0].stop), (found[1].start, found[1].stop)
    foreground = label > 0
    n_fg = int(foreground.sum())
    samples = np.empty(0, dtype=np.float64)
    if case.modality == "ct" and n_fg:
        values = image[foreground]
        rng = np.random.default_rng(index)
        take = min(SAMPLES_PER_CASE, values.size)
        samples = rng.choice(values, size=take, replace=False).astype(np.float64)
    fp = CaseFingerprint(
        case_id=case.case_id,
        modality=case.modality,
        spacing=affine_spacing(affine),
        shape=shape,  # type: ignore[arg-type]
        body_box=tuple(box),  # type: ignore[arg-type]
        foreground_voxels=n_fg,
    )
    return fp, samples


def fingerprint_dataset(cases: list[AmosCase], progress: bool = True) -> Fingerprint:
    """Fingerprint every case (one read each) and summarise the CT foreground."""
    from amoseg.progress import progress_bar

    results: list[CaseFingerprint] = []
    samples: list[np.ndarray] = []
    bar = progress_bar("plan", enabled=progress)
    with bar:
        task = bar.add_task("fingerprint", total=len(cases))
        for index, case in enumerate(cases):
            fp, values = fingerprint_case(case, index)
            results.append(fp)
            samples.append(values)
            bar.update(task, advance=1, description=case.case_id)
    values = np.concatenate(samples) if samples else np.empty(0)
    intensity = None
    if values.size:
        intensity = Intensity(
            mean=float(values.mean()),
            std=float(values.std()),
            p00_5=float(np.percentile(values, 0.5)),
            p99_5=float(np.percentile(values, 99.5)),
            samples=int(values.size),
        )
    return Fingerprint(tuple(results), intensity)


def fingerprint_from_dict(data: dict[str, Any], where: Path | None = None) -> Fingerprint:
    """Rebuild a stored fingerprint (plan.json's `fingerprint`)."""
    cases = tuple(
        CaseFingerprint(
            case_id=str(c["case_id"]),
            modality=str(c["modality"]),
            spacing=tuple(float(s) for s in c["spacing"]),  # type: ignore[arg-type]
            shape=tuple(int(n) for n in c["shape"]),  # type: ignore[arg-type]
            body_box=tuple((int(a), int(b)) for a, b in c["body_box"]),  # type: ignore[arg-type]
            foreground_voxels=int(c["foreground_voxels"]),
        )
        for c in data.get("cases", [])
    )
    fg = data.get("ct_foreground")
    return Fingerprint(cases, None if fg is None else Intensity(**fg))
