"""Synthetic AMOS22-format abdominal CT and MR: amoseg's embedded default dataset.

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
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from amoseg.atomic import write_json
from amoseg.data.nifti import save_nifti
from amoseg.data.synth_anatomy import Patient, render, sample_patient
from amoseg.data.synth_hard import add_streaks, paint_hard, sample_hard
from amoseg.data.synth_mr import MrProtocol, mr_signal, sample_protocol
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
MR_IDS = np.arange(MRI_ID_THRESHOLD, 1000)  # AMOS MR ids start at 500 (amos_0507, ...)
MODALITIES = ("ct", "mr", "mixed")
MIXED_MR_FRACTION = 100 / 600  # AMOS22: 500 CT and 100 MRI scans
MAX_MIXED_CASES = 590  # keeps both id ranges large enough at the mixed ratio
DATASET_MODALITY = {"ct": "CT", "mr": "MRI"}  # how dataset.json spells them
SLAB_VOXELS = 8_000_000  # voxels rendered at once: bounds memory for 512² full scans
_FULL_DZ = (1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
_FULL_DZ_P = (0.15, 0.1, 0.15, 0.1, 0.1, 0.4)
CASE_MODALITIES = ("ct", "mr")
# random streams of the options (case_rng's third key); slab noise uses 1, 2, ...
HARD_STREAM, MR_STREAM, RANDOM_STREAM = 10_000, 20_000, 30_000


@dataclass
class SynthCase:
    """One rendered scan, arrays in file order with the affine that places them."""

    image: np.ndarray  # int16 HU
    label: np.ndarray  # uint8 or uint16 AMOS ids
    affine: np.ndarray
    qform_code: int
    sform_code: int
    patient: Patient
    modality: str = "ct"
    sequence: str | None = None  # MR: which synth_mr sequence
    extras: dict | None = None  # --hard: what synth_hard added

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


def synth_case(
    seed: int,
    index: int,
    preset: str = "demo",
    modality: str = "ct",
    hard: bool = False,
    randomise: bool = False,
) -> SynthCase:
    """Render case `index` of the dataset drawn with `seed` (pure: no files touched).

    `modality` "mr" renders the same kind of patient as an MR scan (synth_mr); `hard` adds
    synth_hard's extras; `randomise` draws every tissue's intensity at random (SynthSeg-style)
    and blurs / coarsens the result. Each option draws from its own random stream, so plain CT
    output for a seed never changes when options are added.
    """
    if preset not in PRESETS:
        raise AmosegError(f"unknown preset {preset!r}", None, f"choose one of {', '.join(PRESETS)}")
    if modality not in CASE_MODALITIES:
        raise AmosegError(f"unknown modality {modality!r}", None, "choose ct or mr")
    mr = modality == "mr"
    rng = case_rng(seed, index)
    patient = sample_patient(rng)
    extras = None
    if hard:
        extras = sample_hard(patient, case_rng(seed, index, HARD_STREAM), coverage=not mr)
    protocol = None
    if mr:
        mrng = case_rng(seed, index, MR_STREAM)
        _mr_coverage(patient, mrng)
        protocol = sample_protocol(patient, mrng)
    if randomise:
        _randomise_tissues(patient, protocol, case_rng(seed, index, RANDOM_STREAM))
    _, t_ant, _, t_post = patient.body_layers()
    n_x, n_y, n_z, sxy, dz = _scan_grid(patient, rng, preset, protocol)
    fov_x, fov_y = sxy * n_x, sxy * n_y
    # patient coordinates of the voxel centres (RAS order: x grows toward patient right)
    centre = np.array([rng.normal(0, 10), -15 + (t_ant - t_post) / 2 + rng.normal(0, 10)])
    ax_x = centre[0] - fov_x / 2 + (np.arange(n_x) + 0.5) * sxy
    ax_y = centre[1] - fov_y / 2 + (np.arange(n_y) + 0.5) * sxy
    ax_z = patient.z_bottom + np.arange(n_z) * dz
    offset = np.array([rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-1400, 1700)])
    affine = np.diag([sxy, sxy, dz, 1.0])
    affine[:3, 3] = np.array([ax_x[0], ax_y[0], ax_z[0]]) + offset
    affine = affine.astype(np.float32).astype(np.float64)  # AMOS stores float32 affines
    lo = (ax_x[0] - 60, ax_y[0] - 60, ax_z[0] - 60)
    hi = (ax_x[-1] + 60, ax_y[-1] + 60, ax_z[-1] + 60)
    field = SmoothField(rng, lo, hi, spacing=20.0, count=4)
    warp_mm = float(rng.uniform(3, 7))
    noise_sd = float(rng.uniform(8, 22)) * (5.0 / max(dz, 1.0)) ** 0.25
    pad_circle = bool(rng.random() < 0.3) and not mr  # MR has no reconstruction circle
    kernel = 0.6
    if extras is not None:
        noise_sd /= np.sqrt(extras.dose)
        kernel = extras.kernel_sigma
    bias = None
    if mr:  # coil sensitivity: one smooth field over the scan, ~10 cm correlation length
        bias = SmoothField(case_rng(seed, index, MR_STREAM + 1), lo, hi, spacing=60.0, count=1)
    image = np.empty((n_x, n_y, n_z), np.int16)
    label = np.empty((n_x, n_y, n_z), np.uint8)
    slab_len = max(8, SLAB_VOXELS // (n_x * n_y))
    for slab, k0 in enumerate(range(0, n_z, slab_len)):
        k1 = min(n_z, k0 + slab_len)
        lo_k, hi_k = max(0, k0 - 2), min(n_z, k1 + 2)  # margin for the z blur
        axes = [ax_x, ax_y, ax_z[lo_k:hi_k]]
        P, rough = _warp(patient, field, axes, warp_mm)
        cv = Canvas(axes, P, rough)
        del P
        render(patient, cv)
        if extras is not None:
            paint_hard(patient, extras, cv)
        srng = case_rng(seed, index, 1 + slab)
        if protocol is not None:
            values = mr_signal(protocol, cv.tissue, srng, (sxy, sxy, dz), bias.sample_grid(axes)[0])
        else:
            values = _ct_numbers(patient, cv.tissue, srng, (sxy, sxy, dz), noise_sd, kernel)
            if extras is not None:
                add_streaks(values, cv, extras, sxy)
        crop = slice(k0 - lo_k, k0 - lo_k + (k1 - k0))
        image[:, :, k0:k1] = values[:, :, crop]
        label[:, :, k0:k1] = cv.label[:, :, crop]
    if randomise:
        image = _degrade(image, (sxy, sxy, dz), case_rng(seed, index, RANDOM_STREAM + 1), mr)
    if pad_circle:  # outside the reconstruction circle, as many scanners write it
        r = np.hypot(*np.meshgrid(ax_x - centre[0], ax_y - centre[1], indexing="ij"))
        image[r > fov_x / 2] = -2048
    # file orientation: AMOS mixes LAS and RAS
    if rng.random() < 0.6:
        image, label = image[::-1], label[::-1]
        flip = np.diag([-1.0, 1.0, 1.0, 1.0])
        flip[0, 3] = n_x - 1
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
        modality=modality,
        sequence=protocol.sequence if protocol is not None else None,
        extras=extras.describe() if extras is not None else None,
    )


def _scan_grid(
    p: Patient, rng: np.random.Generator, preset: str, protocol: MrProtocol | None
) -> tuple[int, int, int, float, float]:
    """Matrix (n_x, n_y, n_z) and spacing (in-plane, slice) of one scan of `p`.

    CT: a square 512² (full) or 128-160² (demo) field of view 3-9 cm wider than the body.
    MR: a smaller matrix at coarser in-plane spacing, rectangular (the phase-encoding axis,
    AP, is cut to the body), thicker slices (2-4 mm 3D GRE, 4-8 mm single-shot TSE).
    """
    muscle, t_ant, t_lat, t_post = p.body_layers()
    a, b = p.cavity_radii(np.array([0.0, 150.0, -300.0]))
    width = 2 * (a.max() + muscle + t_lat)
    depth = 2 * (b.max() + muscle) + t_ant + t_post + 20  # + table
    length = p.z_top - p.z_bottom
    if protocol is not None:
        margin = float(rng.uniform(20, 60))
        fov_x, fov_y = width + margin, depth + margin
        if preset == "full":
            sxy = float(rng.uniform(1.1, 1.7))
            thick = protocol.sequence == "t2_haste"
            dz = float(rng.uniform(4.0, 8.0) if thick else rng.uniform(2.0, 4.0))
            n_z = round(length / dz)
        else:
            sxy = fov_x / int(rng.integers(80, 113))
            n_z = int(rng.integers(24, 37))
            dz = round(length / n_z, 2)
        return int(np.ceil(fov_x / sxy / 8) * 8), int(np.ceil(fov_y / sxy / 8) * 8), n_z, sxy, dz
    fov = max(width, depth) + float(rng.uniform(30, 90))
    if preset == "full":
        n_x = 512
        sxy = float(np.clip(fov / n_x, 0.6, 0.9))
        dz = float(rng.choice(_FULL_DZ, p=_FULL_DZ_P))
        n_z = round(length / dz)
    else:
        n_x = int(rng.choice([128, 144, 160]))
        sxy = fov / n_x
        n_z = int(rng.integers(45, 61))
        dz = round(length / n_z, 2)
    return n_x, n_x, n_z, sxy, dz


def _mr_coverage(p: Patient, rng: np.random.Generator) -> None:
    """Abdominal MR usually covers the dome of the liver to below the kidneys; few reach
    the pelvis (the bladder and prostate/uterus are then absent)."""
    p.z_top = float(rng.uniform(max(p.dome) + 5, max(p.dome) + 40))
    p.z_bottom = float(rng.uniform(-200, -110)) if rng.random() < 0.8 else p.z_bottom


def _randomise_tissues(p: Patient, protocol: MrProtocol | None, rng: np.random.Generator) -> None:
    """SynthSeg-style contrast: every tissue's mean intensity and mottle drawn at random, so a
    model must segment by shape and context, not by intensity."""
    n = len(p.hu_mean)
    if protocol is None:
        p.hu_mean = rng.uniform(-1000, 1500, n).astype(np.float32)
        p.hu_texture = rng.uniform(0, 60, n).astype(np.float32)
        return
    protocol.water = rng.uniform(0, 1, n)
    protocol.fat = np.zeros(n)
    protocol.texture = rng.uniform(0, 0.2, n)
    protocol.scale = float(rng.uniform(500, 2500))
    protocol.noise_sigma = float(rng.uniform(0.01, 0.08))


def _degrade(
    image: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator, mr: bool
) -> np.ndarray:
    """Random blur and resolution loss (SynthSeg): blur, then down- and up-sample each axis
    by a random factor, so a model sees many effective resolutions on one grid."""
    data = image.astype(np.float32)
    sigma = [float(rng.uniform(0, 1.2)) for _ in range(3)]
    data = ndimage.gaussian_filter(data, sigma=sigma)
    factors = [float(rng.uniform(1, 2.5)) for _ in range(2)]
    factors.append(float(rng.uniform(1, 3 if spacing[2] < 3 else 1.5)))
    small = ndimage.zoom(data, [1 / f for f in factors], order=1)
    back = ndimage.zoom(
        small, [n / m for n, m in zip(data.shape, small.shape, strict=True)], order=1
    )
    lo = 0 if mr else -1024
    return np.clip(np.rint(back), lo, 32767 if mr else 3071).astype(np.int16)


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
    kernel: float = 0.6,
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
    noise = ndimage.gaussian_filter(noise, sigma=(kernel, kernel, 0))  # recon kernel
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


def case_plan(cases: int, seed: int, modality: str = "ct") -> list[tuple[int, str, str]]:
    """(AMOS id, modality, split) for each case index: ids as AMOS numbers them (CT 1-499, MR
    500-999), `mixed` at AMOS's CT:MR ratio (500:100), splits ~70/15/15 within each modality.

    CT-only draws exactly what the generator drew before modalities existed, so a seed's CT
    dataset is unchanged.
    """
    id_rng = np.random.default_rng(np.random.SeedSequence([int(seed), 2**31 - 1]))
    if modality == "ct":
        n_mr = 0
    elif modality == "mr":
        n_mr = cases
    else:
        n_mr = int(np.floor(cases * MIXED_MR_FRACTION + 0.5))
        n_mr = min(max(n_mr, 1 if cases >= 2 else 0), cases - 1 if cases >= 2 else cases)
    n_ct = cases - n_mr
    ct_ids = id_rng.choice(np.arange(1, MAX_CASES + 1), size=n_ct, replace=False) if n_ct else []
    mr_ids = id_rng.choice(MR_IDS, size=n_mr, replace=False) if n_mr else []
    ids = np.sort(np.concatenate([np.asarray(ct_ids, int), np.asarray(mr_ids, int)]))
    split_of: dict[int, str] = {}
    for group in (np.flatnonzero(ids < MRI_ID_THRESHOLD), np.flatnonzero(ids >= MRI_ID_THRESHOLD)):
        if not len(group):
            continue
        n_tr, n_va, _ = split_counts(len(group))
        for rank, j in enumerate(id_rng.permutation(len(group))):
            split = "training" if rank < n_tr else "validation" if rank < n_tr + n_va else "test"
            split_of[int(group[j])] = split
    return [
        (int(ids[i]), "mr" if ids[i] >= MRI_ID_THRESHOLD else "ct", split_of[i])
        for i in range(cases)
    ]


def _write_case(
    out: Path, seed: int, index: int, preset: str, plan: tuple[int, str, str], flags: dict
) -> tuple[dict[str, str], dict[str, Any]]:
    """Render and write one case (in a worker process or inline); returns its dataset.json
    entry and what the generator chose for it."""
    case_id, modality, split = plan
    name = f"amos_{case_id:04d}.nii.gz"
    img_dir, lab_dir = SPLIT_FOLDERS[split]
    case = synth_case(seed, index, preset, modality, **flags)
    image, label = case.images()
    save_nifti(image, out / img_dir / name)
    save_nifti(label, out / lab_dir / name)
    entry = {
        "image": f"./{img_dir}/{name}",
        "label": f"./{lab_dir}/{name}",
        "modality": DATASET_MODALITY[modality],
    }
    info: dict[str, Any] = {"modality": modality}
    if case.sequence is not None:
        info["sequence"] = case.sequence
    if case.extras is not None:
        info["hard"] = case.extras
    return entry, info


def _rendered(
    out: Path, seed: int, preset: str, plans: list, flags: dict, workers: int
) -> Iterator[tuple[int, tuple[dict[str, str], dict[str, Any]]]]:
    """(index, result) per case as they finish; processes when workers > 1."""
    if workers == 1 or len(plans) == 1:
        for i, plan in enumerate(plans):
            yield i, _write_case(out, seed, i, preset, plan, flags)
        return
    # spawn, as prepare does: no inherited thread pools; every case is seeded by its index,
    # so the files do not depend on which worker wrote them or in which order
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(plans)),
        mp_context=get_context("spawn"),
    )
    try:
        futures = {
            pool.submit(_write_case, out, seed, i, preset, plan, flags): i
            for i, plan in enumerate(plans)
        }
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    yield futures[future], future.result()
                except BrokenProcessPool as exc:
                    raise AmosegError(
                        "a synth worker process died (out of memory?)",
                        out,
                        "retry with fewer --workers",
                    ) from exc
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def generate_dataset(
    out: Path,
    cases: int,
    seed: int,
    preset: str = "demo",
    progress: bool = True,
    overwrite: bool = False,
    *,
    modality: str = "ct",
    hard: bool = False,
    randomise: bool = False,
    workers: int = 1,
) -> Path:
    """Write `cases` synthetic scans in AMOS22 layout under `out`; returns `out`.

    `modality` is ct, mr or mixed (AMOS's CT:MR ratio); `hard` and `randomise` as in
    `synth_case`. Each NIfTI is written atomically and dataset.json last, so a folder with a
    dataset.json is complete; `workers` processes give the same files as one. `overwrite`
    replaces a previous dataset folder (never any other folder).
    """
    out = Path(out)
    if cases < 1:
        raise AmosegError(f"--cases must be at least 1 (got {cases})")
    if seed < 0:
        raise AmosegError(f"--seed must be zero or positive (got {seed})")
    if modality not in MODALITIES:
        raise AmosegError(
            f"unknown modality {modality!r}", None, f"choose one of {', '.join(MODALITIES)}"
        )
    limit = {"ct": MAX_CASES, "mr": len(MR_IDS), "mixed": MAX_MIXED_CASES}[modality]
    if cases > limit:
        raise AmosegError(
            f"--cases must be at most {limit} for --modality {modality} (got {cases})",
            None,
            "AMOS numbers CT 1-499 and MR from 500",
        )
    if preset not in PRESETS:
        raise AmosegError(f"unknown preset {preset!r}", None, f"choose one of {', '.join(PRESETS)}")
    if workers < 1:
        raise AmosegError(f"--workers must be at least 1 (got {workers})")
    _check_out(out, overwrite)
    if out.is_dir() and any(out.iterdir()):
        (out / "dataset.json").unlink()  # the folder is incomplete from here on
        for sub in out.iterdir():
            if sub.is_dir():
                shutil.rmtree(sub)
            else:
                sub.unlink()
    plans = case_plan(cases, seed, modality)
    flags = {"hard": hard, "randomise": randomise}
    lists: dict[str, list[dict[str, str]]] = {k: [] for k in SPLIT_FOLDERS}
    per_case: dict[str, dict[str, Any]] = {}
    for folder in (f for pair in SPLIT_FOLDERS.values() for f in pair):
        (out / folder).mkdir(parents=True, exist_ok=True)
    with progress_bar("synth", enabled=progress, transient=True) as bar:
        task = bar.add_task(f"{modality} ({preset})", total=cases)
        for i, (entry, info) in _rendered(out, seed, preset, plans, flags, workers):
            lists[plans[i][2]].append(entry)
            per_case[f"amos_{plans[i][0]:04d}"] = info
            bar.advance(task)
    for entries in lists.values():
        entries.sort(key=lambda e: e["image"])
    kinds = sorted({m for _, m, _ in plans})
    what = " and ".join(DATASET_MODALITY[k] for k in kinds)
    write_json(
        out / "dataset.json",
        {
            "name": "AMOS",
            "description": f"synthetic AMOS22-format abdominal {what} from amoseg "
            f"(preset {preset}, seed {seed}); not real patients",
            "reference": "generated by amoseg synth",
            "licence": "CC0 (synthetic)",
            "release": "amoseg-synth 1.1",
            "tensorImageSize": "3D",
            # AMOS's channel map; per case the entries say CT or MRI (and AMOS ids do too)
            "modality": {"0": DATASET_MODALITY[kinds[0]] if len(kinds) == 1 else "CT or MRI"},
            "labels": dict(AMOS_DATASET_LABELS),
            "numTraining": len(lists["training"]),
            "numValidation": len(lists["validation"]),
            "numTest": len(lists["test"]),
            "training": lists["training"],
            "validation": lists["validation"],
            "test": lists["test"],
            # provenance that prepare carries into the store and train into each run
            "amoseg_synthetic": True,
            "amoseg_synth": {
                "preset": preset,
                "seed": seed,
                "modality": modality,
                "hard": hard,
                "randomise_intensity": randomise,
                "cases": dict(sorted(per_case.items())),
            },
        },
    )
    return out
