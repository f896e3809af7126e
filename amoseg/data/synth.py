"""Synthetic AMOS22-format abdominal CT: amoseg's embedded default dataset.

No machine here can download AMOS22, so amoseg writes datasets that look like it on disk —
same folders, file names, dataset.json keys and label spellings, int16 HU images, uint8 or
uint16 labels, LAS or RAS affines with real-scan spacings — holding synthetic patients whose
15 organs are anatomically placed (see synth_anatomy). The `full` preset uses 512² slices at
0.6–0.9 mm; `demo` renders the same physical field of view on a 128–160² matrix (a coarser
spacing, like a thumbnail of a real scan) so a 30-case set is written in seconds.

Everything is deterministic for a seed: case i draws from SeedSequence([seed, i]).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from amoseg.atomic import write_json
from amoseg.data.nifti import save_nifti
from amoseg.data.synth_anatomy import Patient, render, sample_patient
from amoseg.data.synth_shapes import Canvas, SmoothField
from amoseg.errors import AmosegError
from amoseg.labels import AMOS_DATASET_LABELS, MRI_ID_THRESHOLD
from amoseg.progress import progress_bar

PRESETS = ("demo", "full")
SPLIT_FOLDERS = {
    "training": ("imagesTr", "labelsTr"),
    "validation": ("imagesVa", "labelsVa"),
    "test": ("imagesTs", "labelsTs"),
}
MAX_CASES = MRI_ID_THRESHOLD - 1  # AMOS CT ids are 1..499
SLAB_VOXELS = 8_000_000  # voxels rendered at once: bounds memory for 512² full scans
_FULL_DZ = (1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
_FULL_DZ_P = (0.15, 0.1, 0.15, 0.1, 0.1, 0.4)


@dataclass
class SynthCase:
    """One rendered scan, arrays in file order with the affine that places them."""

    image: np.ndarray  # int16 HU
    label: np.ndarray  # uint8 or uint16 AMOS ids
    affine: np.ndarray
    qform_code: int
    sform_code: int
    patient: Patient

    def images(self) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
        out = []
        for data in (self.image, self.label):
            img = nib.Nifti1Image(data, self.affine)
            img.set_qform(self.affine, code=self.qform_code)
            img.set_sform(self.affine, code=self.sform_code)
            img.header.set_xyzt_units("mm", "sec")
            out.append(img)
        return out[0], out[1]


def case_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), int(stream)]))


def synth_case(seed: int, index: int, preset: str = "demo") -> SynthCase:
    """Render case `index` of the dataset drawn with `seed` (pure: no files touched)."""
    if preset not in PRESETS:
        raise AmosegError(f"unknown preset {preset!r}", None, f"choose one of {', '.join(PRESETS)}")
    rng = case_rng(seed, index)
    patient = sample_patient(rng)
    muscle, t_ant, t_lat, t_post = patient.body_layers()
    a, b = patient.cavity_radii(np.array([0.0, 150.0, -300.0]))
    width = 2 * (a.max() + muscle + t_lat)
    depth = 2 * (b.max() + muscle) + t_ant + t_post + 20  # + table
    fov = max(width, depth) + float(rng.uniform(30, 90))
    if preset == "full":
        n_xy = 512
        sxy = float(np.clip(fov / n_xy, 0.6, 0.9))
        dz = float(rng.choice(_FULL_DZ, p=_FULL_DZ_P))
        n_z = round((patient.z_top - patient.z_bottom) / dz)
    else:
        n_xy = int(rng.choice([128, 144, 160]))
        sxy = fov / n_xy
        n_z = int(rng.integers(45, 61))
        dz = round((patient.z_top - patient.z_bottom) / n_z, 2)
    fov = sxy * n_xy
    # patient coordinates of the voxel centres (RAS order: x grows toward patient right)
    centre = np.array([rng.normal(0, 10), -15 + (t_ant - t_post) / 2 + rng.normal(0, 10)])
    ax_x = centre[0] - fov / 2 + (np.arange(n_xy) + 0.5) * sxy
    ax_y = centre[1] - fov / 2 + (np.arange(n_xy) + 0.5) * sxy
    ax_z = patient.z_bottom + np.arange(n_z) * dz
    offset = np.array([rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-1400, 1700)])
    affine = np.diag([sxy, sxy, dz, 1.0])
    affine[:3, 3] = np.array([ax_x[0], ax_y[0], ax_z[0]]) + offset
    affine = affine.astype(np.float32).astype(np.float64)  # AMOS stores float32 affines
    field = SmoothField(
        rng,
        (ax_x[0] - 60, ax_y[0] - 60, ax_z[0] - 60),
        (ax_x[-1] + 60, ax_y[-1] + 60, ax_z[-1] + 60),
        spacing=20.0,
        count=4,
    )
    warp_mm = float(rng.uniform(3, 7))
    noise_sd = float(rng.uniform(8, 22)) * (5.0 / max(dz, 1.0)) ** 0.25
    pad_circle = bool(rng.random() < 0.3)
    image = np.empty((n_xy, n_xy, n_z), np.int16)
    label = np.empty((n_xy, n_xy, n_z), np.uint8)
    slab_len = max(8, SLAB_VOXELS // (n_xy * n_xy))
    for slab, k0 in enumerate(range(0, n_z, slab_len)):
        k1 = min(n_z, k0 + slab_len)
        lo, hi = max(0, k0 - 2), min(n_z, k1 + 2)  # margin for the z blur
        axes = [ax_x, ax_y, ax_z[lo:hi]]
        P, rough = _warp(patient, field, axes, warp_mm)
        cv = Canvas(axes, P, rough)
        del P
        render(patient, cv)
        srng = case_rng(seed, index, 1 + slab)
        hu = _ct_numbers(patient, cv.tissue, srng, (sxy, sxy, dz), noise_sd)
        crop = slice(k0 - lo, k0 - lo + (k1 - k0))
        image[:, :, k0:k1] = hu[:, :, crop]
        label[:, :, k0:k1] = cv.label[:, :, crop]
    if pad_circle:  # outside the reconstruction circle, as many scanners write it
        r = np.hypot(*np.meshgrid(ax_x - centre[0], ax_y - centre[1], indexing="ij"))
        image[r > fov / 2] = -2048
    # file orientation: AMOS mixes LAS and RAS
    if rng.random() < 0.6:
        image, label = image[::-1], label[::-1]
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        flip[0, 3] = n_xy - 1
        affine = affine @ flip
    label_dtype = np.uint16 if rng.random() < 0.7 else np.uint8
    qform_code, sform_code = [(1, 0), (0, 2), (1, 1)][int(rng.integers(3))]
    return SynthCase(
        image=np.ascontiguousarray(image),
        label=np.ascontiguousarray(label).astype(label_dtype),
        affine=affine,
        qform_code=qform_code,
        sform_code=sform_code,
        patient=patient,
    )


def _warp(
    p: Patient, field: SmoothField, axes: list[np.ndarray], warp_mm: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """Patient coordinates after posture tilt and a smooth elastic deformation."""
    grid = [g.astype(np.float32) for g in np.meshgrid(*axes, indexing="ij")]
    pivot = (0.0, p.cavity_cy, 0.0)
    rel = [g - c for g, c in zip(grid, pivot, strict=True)]
    P = []
    for i in range(3):
        r = p.tilt[i]
        P.append((r[0] * rel[0] + r[1] * rel[1] + r[2] * rel[2] + pivot[i]).astype(np.float32))
    del rel
    fields = field.sample_grid(axes)
    for i in range(3):
        P[i] += warp_mm * fields[i]
    return P, fields[3]


def _ct_numbers(
    p: Patient,
    tissue: np.ndarray,
    rng: np.random.Generator,
    spacing: tuple[float, float, float],
    noise_sd: float,
) -> np.ndarray:
    """Tissue map → int16 HU: per-tissue mean + mottle, partial-volume blur, scanner noise."""
    sxy, _, dz = spacing
    tex = rng.standard_normal(tissue.shape, dtype=np.float32)
    tex = ndimage.gaussian_filter(tex, sigma=(max(0.7, 3 / sxy),) * 2 + (max(0.5, 3 / dz),))
    tex /= max(float(tex.std()), 1e-6)
    hu = p.hu_mean[tissue] + p.hu_texture[tissue] * tex
    del tex
    pv = max(0.45, 0.8 / sxy)
    hu = ndimage.gaussian_filter(hu, sigma=(pv, pv, 0.35))
    noise = rng.standard_normal(tissue.shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, sigma=(0.6, 0.6, 0))
    noise *= noise_sd / max(float(noise.std()), 1e-6)
    hu += noise
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def split_counts(cases: int) -> tuple[int, int, int]:
    """Roughly 70/15/15 training/validation/test, at least one training case."""
    n_va = int(np.floor(0.15 * cases + 0.5))
    n_ts = int(np.floor(0.15 * cases + 0.5))
    n_tr = cases - n_va - n_ts
    if n_tr < 1:
        n_va, n_ts, n_tr = 0, 0, cases
    return n_tr, n_va, n_ts


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise AmosegError("output path exists and is a file", out, "choose a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise AmosegError(
                "output folder exists and is not empty", out, "choose another or pass --overwrite"
            )
        if not (out / "dataset.json").exists():
            raise AmosegError(
                "refusing to overwrite a folder that holds no dataset.json",
                out,
                "only a previous dataset folder can be overwritten",
            )


def generate_dataset(
    out: Path,
    cases: int,
    seed: int,
    preset: str = "demo",
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write `cases` synthetic CT scans in AMOS22 layout under `out`; returns `out`.

    Each NIfTI is written atomically and dataset.json last, so a folder with a dataset.json
    is complete. `overwrite` replaces a previous dataset folder (never any other folder).
    """
    out = Path(out)
    if cases < 1:
        raise AmosegError(f"--cases must be at least 1 (got {cases})")
    if seed < 0:
        raise AmosegError(f"--seed must be zero or positive (got {seed})")
    if cases > MAX_CASES:
        raise AmosegError(
            f"--cases must be at most {MAX_CASES} (got {cases})", None, "AMOS CT ids are < 500"
        )
    if preset not in PRESETS:
        raise AmosegError(f"unknown preset {preset!r}", None, f"choose one of {', '.join(PRESETS)}")
    _check_out(out, overwrite)
    if out.is_dir() and any(out.iterdir()):
        (out / "dataset.json").unlink()  # the folder is incomplete from here on
        for sub in out.iterdir():
            if sub.is_dir():
                shutil.rmtree(sub)
            else:
                sub.unlink()
    id_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2**31 - 1]))
    ids = np.sort(id_rng.choice(np.arange(1, MAX_CASES + 1), size=cases, replace=False))
    order = id_rng.permutation(cases)
    n_tr, n_va, _ = split_counts(cases)
    split_of = {}
    for rank, i in enumerate(order):
        split_of[int(i)] = (
            "training" if rank < n_tr else "validation" if rank < n_tr + n_va else "test"
        )
    lists: dict[str, list[dict[str, str]]] = {k: [] for k in SPLIT_FOLDERS}
    for folder in (f for pair in SPLIT_FOLDERS.values() for f in pair):
        (out / folder).mkdir(parents=True, exist_ok=True)
    with progress_bar(enabled=progress, transient=True) as bar:
        task = bar.add_task("synthesising", total=cases)
        for i in range(cases):
            name = f"amos_{ids[i]:04d}.nii.gz"
            split = split_of[i]
            img_dir, lab_dir = SPLIT_FOLDERS[split]
            case = synth_case(seed, i, preset)
            image, label = case.images()
            save_nifti(image, out / img_dir / name)
            save_nifti(label, out / lab_dir / name)
            lists[split].append({"image": f"./{img_dir}/{name}", "label": f"./{lab_dir}/{name}"})
            bar.advance(task)
    for entries in lists.values():
        entries.sort(key=lambda e: e["image"])
    write_json(
        out / "dataset.json",
        {
            "name": "AMOS",
            "description": f"synthetic AMOS22-format abdominal CT from amoseg (preset {preset}, "
            f"seed {seed}); not real patients",
            "reference": "generated by amoseg synth",
            "licence": "CC0 (synthetic)",
            "release": "amoseg-synth 1.0",
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": dict(AMOS_DATASET_LABELS),
            "numTraining": len(lists["training"]),
            "numValidation": len(lists["validation"]),
            "numTest": len(lists["test"]),
            "training": lists["training"],
            "validation": lists["validation"],
            "test": lists["test"],
        },
    )
    return out
