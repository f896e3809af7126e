"""Fingerprint → plan: target spacings, patch and batch sizes, normalisation, networks.

The rules are nnU-Net's, simplified where noted (docs/plan.md):

- `2d`: in-plane spacing = the median in-plane spacing; z is left as it is.
- `3d`: spacing = the median per axis; if the coarsest median axis is more than
  ANISOTROPY (3) times the finest, that axis's target is instead the 10th percentile of its
  spacings (never finer than the other axes), so thick-slice scans are not interpolated to
  a z-resolution they never had.
- `seed`: the report's fixed S×S resize (no target spacing).
- Patch size: the median body box after resampling, rounded up to the network's multiple;
  for 3d, the largest axis is halved-by-steps until the memory estimate fits the budget.
- Batch size: budget / estimated training memory of one sample (`sample_bytes`), in
  [MIN_BATCH, MAX_BATCH].
- `3d_lowres` (nnU-Net v2's rule): while the `3d` patch holds < LOWRES_COVERAGE (25 %) of the
  median resampled shape's voxels, the spacing of the axes more than 2x finer than the coarsest
  is multiplied by LOWRES_STEP (1.03) (of every axis once none is) and the patch is planned
  again for the coarser shape. Dropped when the median shape shrinks less than 2x in voxels.
  `3d_cascade_fullres` is `3d` whose input adds the `3d_lowres` prediction (`previous_stage`).
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np

from amoseg.errors import AmosegError
from amoseg.planning.fingerprint import BODY_HU, Fingerprint
from amoseg.planning.plan import TRAIN_ON, Configuration, Network, Plan
from amoseg.preprocessing import Normalisation

ANISOTROPY = 3.0
DEFAULT_SIZE = 640
DEFAULT_MEMORY_GB = 8.0
MIN_BATCH, MAX_BATCH = 2, 64
#: network defaults the models read (`unet`'s own defaults; `unet3d` a nnU-Net-like start).
UNET_ARGS = {"base": 32, "depth": 4, "context": 1}
UNET3D_ARGS = {"base": 32, "depth": 4}
#: a plan for CPU training: 3D networks at half nnU-Net's width, with the smallest batch.
#: Measured on a 2-core AVX512-BF16 CPU (docs/plan.md): a bf16 training step of a 64×48×64
#: patch costs 0.34 s per sample at base 16 against 1.23 s at base 32, and batch 2 takes
#: 2.5× the optimiser steps of batch 5 per minute; in 10 minutes that lifted mean organ Dice
#: on 40 phantoms from 5 % (base 32, batch 5) to 38.6 % (mean case Dice).
CPU_UNET3D_ARGS = {"base": 16, "depth": 4}
MAX_PATCH_2D = 1024
MAX_PATCH_3D = (192, 192, 192)
#: bytes of training memory per voxel and feature channel of a U-Net level: activations kept
#: for the backward pass (≈ 2 convs × (conv, norm, activation) in the encoder and decoder ≈ 12
#: tensors) at 4 bytes (fp32), plus their gradients (×2). A coarse, deliberately safe estimate.
BYTES_PER_FEATURE_VOXEL = 12 * 4 * 2
#: nnU-Net's `lowres_creation_threshold` and spacing step (experiment planner, v2).
LOWRES_COVERAGE = 0.25
LOWRES_STEP = 1.03
#: a low-resolution stage whose median image is under 2x fewer voxels is not worth a stage.
LOWRES_MIN_SHRINK = 2.0
#: the CT window of the report's U-Nets (the seed configuration).
SEED_WINDOW = (-1000.0, 1000.0)


def sample_bytes(patch: tuple[int, ...], base: int, depth: int) -> float:
    """Estimated training memory of one sample of `patch` voxels for a U-Net whose level l has
    base·2^l channels at 1/2^l resolution per axis (weights ignored: small next to this)."""
    dims = len(patch)
    voxels = float(np.prod(patch))
    per_voxel = sum(base * 2**level / 2 ** (dims * level) for level in range(depth + 1))
    return voxels * per_voxel * BYTES_PER_FEATURE_VOXEL


def batch_for(patch: tuple[int, ...], base: int, depth: int, budget_gb: float) -> int:
    fit = int(budget_gb * 2**30 // sample_bytes(patch, base, depth))
    return max(MIN_BATCH, min(MAX_BATCH, fit))


def _round_up(n: float, multiple: int, cap: int) -> int:
    return int(min(cap, max(multiple, math.ceil(n / multiple) * multiple)))


def target_spacing_3d(spacings: np.ndarray) -> tuple[float, float, float]:
    """Median spacing with the anisotropy rule (see the module docstring)."""
    target = np.median(spacings, axis=0)
    worst = int(np.argmax(target))
    others = [target[i] for i in range(3) if i != worst]
    if target[worst] > ANISOTROPY * min(target):
        low = float(np.percentile(spacings[:, worst], 10))
        target[worst] = max(low, max(others))
    return tuple(float(v) for v in target)  # type: ignore[return-value]


def _resampled_shape(fp: Fingerprint, target: tuple[float | None, ...]) -> np.ndarray:
    """Median body-box shape (voxels) after resampling to `target` (None: axis kept)."""
    shapes = fp.body_shapes() * fp.spacings()
    for axis, t in enumerate(target):
        shapes[:, axis] = fp.body_shapes()[:, axis] if t is None else shapes[:, axis] / t
    return np.median(shapes, axis=0)


def plan_patch_3d(shape: np.ndarray, memory_gb: float) -> tuple[int, int, int]:
    """The 3d patch for a median resampled `shape`: the shape rounded up to the network's
    multiple (capped), then shrunk until MIN_BATCH samples fit the memory budget."""
    multiple = 2 ** UNET3D_ARGS["depth"]
    base, depth = UNET3D_ARGS["base"], UNET3D_ARGS["depth"]
    patch = [_round_up(n, multiple, cap) for n, cap in zip(shape, MAX_PATCH_3D, strict=True)]
    while sample_bytes(tuple(patch), base, depth) * MIN_BATCH > memory_gb * 2**30:
        # shrink the axis that is largest relative to the median shape (nnU-Net's choice)
        axis = int(np.argmax(np.array(patch) / np.maximum(shape, 1)))
        if patch[axis] <= multiple:
            axis = int(np.argmax(patch))
            if patch[axis] <= multiple:
                break
        patch[axis] -= multiple
    return tuple(int(p) for p in patch)  # type: ignore[return-value]


def lowres_spacing(
    spacing: tuple[float, float, float], shape: np.ndarray, memory_gb: float
) -> tuple[float, float, float] | None:
    """nnU-Net v2's `3d_lowres` spacing for a `3d` plan at `spacing` whose median resampled
    shape is `shape`, or None when its patch already covers LOWRES_COVERAGE of that shape (or
    the low-resolution image would not be LOWRES_MIN_SHRINK x smaller)."""
    full = np.asarray(spacing, dtype=np.float64)
    low = full.copy()
    shape = np.asarray(shape, dtype=np.float64)
    median_voxels = float(np.prod(shape))
    patch_voxels = float(np.prod(plan_patch_3d(shape, memory_gb)))
    planned = False
    while patch_voxels / median_voxels < LOWRES_COVERAGE:
        finer = low.max() / low > 2
        low[finer if finer.any() else slice(None)] *= LOWRES_STEP
        median_voxels = float(np.prod(full / low * shape))
        patch_voxels = float(np.prod(plan_patch_3d(np.round(full / low * shape), memory_gb)))
        planned = True
    if not planned or float(np.prod(shape)) / median_voxels < LOWRES_MIN_SHRINK:
        return None
    return tuple(float(v) for v in low)  # type: ignore[return-value]


def _configuration_3d(
    name: str,
    spacing: tuple[float, float, float],
    patch: tuple[int, int, int],
    norm: dict[str, Normalisation],
    memory_gb: float,
    train_on: str = "gpu",
) -> Configuration:
    """A 3D configuration; `train_on` "cpu": CPU_UNET3D_ARGS and batch MIN_BATCH (the patch
    stays the one planned for nnU-Net's width, so both plans see the same context)."""
    base, depth = UNET3D_ARGS["base"], UNET3D_ARGS["depth"]
    cpu = train_on == "cpu"
    return Configuration(
        name=name,
        dims=3,
        spacing=spacing,
        resample_z=True,
        size=None,
        patch_size=patch,
        batch_size=MIN_BATCH if cpu else batch_for(patch, base, depth, memory_gb),
        memory_budget_gb=memory_gb,
        normalisation=norm,
        network=Network("unet3d", dict(CPU_UNET3D_ARGS if cpu else UNET3D_ARGS)),
        body_crop=BODY_HU,
        context=0,
        keep="all",
    )


def _normalisation(fp: Fingerprint) -> dict[str, Normalisation]:
    out: dict[str, Normalisation] = {}
    if "ct" in fp.modalities() and fp.ct_foreground is not None:
        fg = fp.ct_foreground
        out["ct"] = Normalisation(
            "ct", clip=(fg.p00_5, fg.p99_5), mean=fg.mean, std=max(fg.std, 1e-3)
        )
    if "mr" in fp.modalities():
        out["mr"] = Normalisation("zscore")
    return out


def seed_configuration(
    size: int,
    memory_gb: float = DEFAULT_MEMORY_GB,
    modalities: list[str] | None = None,
    keep: str = "organ",
) -> Configuration:
    """The report's configuration: every axial slice resized to size×size, z as it is, no
    crop at preprocessing (the seed U-Net crops to the body itself, on the model grid). It
    needs no fingerprint, so `prepare --size S` plans nothing."""
    seed_norm = {"ct": Normalisation("window", clip=SEED_WINDOW), "mr": Normalisation("zscore")}
    return Configuration(
        name="seed",
        dims=2,
        spacing=None,
        resample_z=False,
        size=size,
        patch_size=(size, size),
        batch_size=batch_for((size, size), UNET_ARGS["base"], UNET_ARGS["depth"], memory_gb),
        memory_budget_gb=memory_gb,
        normalisation={m: seed_norm[m] for m in (modalities or ["ct", "mr"])},
        network=Network("unet", dict(UNET_ARGS)),
        body_crop=None,
        context=UNET_ARGS["context"],
        keep=keep,
    )


def plan_dataset(
    fp: Fingerprint,
    *,
    size: int = DEFAULT_SIZE,
    memory_gb: float = DEFAULT_MEMORY_GB,
    dataset: str = "",
    lowres: tuple[float, float, float] | None = None,
    train_on: str = "gpu",
) -> Plan:
    """The plan for a fingerprinted dataset (configurations seed, 2d, 3d, and 3d_lowres with
    3d_cascade_fullres when nnU-Net's rule plans a low-resolution stage). `lowres`: the
    3d_lowres spacing (x, y, z mm) instead of the rule's (e.g. TotalSegmentator's 3 or 6 mm
    fast models), its patch planned for that spacing. `train_on`: "gpu" (nnU-Net's network
    widths and memory-planned batches) or "cpu" (3D networks sized for a CPU's clock)."""
    if train_on not in TRAIN_ON:
        raise AmosegError(f"unknown training device {train_on!r}", hint="use cpu or gpu")
    spacings = fp.spacings()
    median = tuple(float(v) for v in np.median(spacings, axis=0))
    configs: dict[str, Configuration] = {}

    configs["seed"] = seed_configuration(size, memory_gb, fp.modalities())

    norm = _normalisation(fp)
    multiple = 2 ** UNET_ARGS["depth"]
    shape_2d = _resampled_shape(fp, (median[0], median[1], None))
    patch_2d = tuple(_round_up(n, multiple, MAX_PATCH_2D) for n in shape_2d[:2])
    configs["2d"] = Configuration(
        name="2d",
        dims=2,
        spacing=median,
        resample_z=False,
        size=None,
        patch_size=patch_2d,
        batch_size=batch_for(patch_2d, UNET_ARGS["base"], UNET_ARGS["depth"], memory_gb),
        memory_budget_gb=memory_gb,
        normalisation=norm,
        network=Network("unet", dict(UNET_ARGS)),
        body_crop=BODY_HU,
        context=UNET_ARGS["context"],
        keep="all",
    )

    target = target_spacing_3d(spacings)
    shape_3d = _resampled_shape(fp, target)
    patch_3d = plan_patch_3d(shape_3d, memory_gb)
    configs["3d"] = _configuration_3d("3d", target, patch_3d, norm, memory_gb, train_on)
    if lowres is None:
        lowres = lowres_spacing(target, shape_3d, memory_gb)
    elif any(lo < t for lo, t in zip(lowres, target, strict=True)):
        raise AmosegError(
            f"a 3d_lowres spacing of {'x'.join(f'{v:g}' for v in lowres)} mm is finer than "
            f"the 3d configuration's {'x'.join(f'{v:.3g}' for v in target)} mm",
            None,
            "give a coarser --lowres-spacing (e.g. 3 or 6 mm)",
        )
    if lowres is not None:
        shape_low = shape_3d * np.array(target) / np.array(lowres)
        configs["3d_lowres"] = _configuration_3d(
            "3d_lowres", lowres, plan_patch_3d(shape_low, memory_gb), norm, memory_gb, train_on
        )
        configs["3d_cascade_fullres"] = replace(
            configs["3d"], name="3d_cascade_fullres", previous_stage="3d_lowres"
        )
    return Plan(
        configurations=configs,
        median_spacing=median,  # type: ignore[arg-type]
        dataset=dataset,
        fingerprint=json.loads(json.dumps(fp.to_dict())),  # plain JSON types, as on disk
        train_on=train_on,
    )
