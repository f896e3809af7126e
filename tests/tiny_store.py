"""A tiny synthetic slice store for model/training tests: bright blobs on a soft-tissue body.

Each case has the same anatomy at slightly jittered positions, with per-class intensities
and noise, so even the pixel-wise logistic regression can learn something and the U-Nets can
learn a lot in a few steps.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.planning.planner import seed_configuration
from amoseg.store.splits import cv_folds
from amoseg.store.store import create_store

#: (class id, centre (row, col) as a fraction of S, radius fraction, HU)
BLOBS = (
    (6, (0.4, 0.3), 0.16, 60),
    (1, (0.4, 0.72), 0.1, 120),
    (2, (0.68, 0.3), 0.08, 200),
    (3, (0.68, 0.7), 0.08, 200),
    (8, (0.55, 0.5), 0.05, 350),
)


def make_case(rng: np.random.Generator, size: int, n_slices: int) -> tuple[np.ndarray, ...]:
    yy, xx = np.mgrid[0:size, 0:size] / size
    image = np.full((n_slices, size, size), -1000.0)
    label = np.zeros((n_slices, size, size), np.uint8)
    body = ((yy - 0.5) / 0.45) ** 2 + ((xx - 0.5) / 0.48) ** 2 < 1
    shift = rng.uniform(-0.04, 0.04, size=2)
    for z in range(n_slices):
        image[z][body] = -50
        grow = 0.7 + 0.6 * np.sin(np.pi * (z + 0.5) / n_slices)
        for cls, (cy, cx), r, hu in BLOBS:
            mask = (yy - cy - shift[0]) ** 2 + (xx - cx - shift[1]) ** 2 < (r * grow) ** 2
            image[z][mask] = hu
            label[z][mask] = cls
    image += rng.normal(0, 20, image.shape)
    return image.astype(np.int16), label


def planned_configuration(name: str, patch_size: tuple[int, ...]) -> Any:
    """A planned `2d` / `3d` configuration on 1 mm voxels (resampling is the identity on the
    tiny stacks), no body crop, the seed CT window."""
    dims = len(patch_size)
    return replace(
        seed_configuration(patch_size[0], keep="all"),
        name=name, dims=dims, spacing=(1.0, 1.0, 1.0), resample_z=dims == 3, size=None,
        patch_size=tuple(patch_size),
    )  # fmt: skip


def store_from_slices(
    root: Path,
    cases: dict[str, tuple[np.ndarray, np.ndarray]],
    splits: dict[str, list[str]],
    configuration: Any = None,
    **info,
) -> Path:
    """A store of (Z, S, S) image/label stacks, through the public `create_store` (each stack
    is an RAS volume with 1 mm voxels, so the seed resize to S×S is the identity); a seed one
    unless `configuration` (e.g. `planned_configuration`) says otherwise."""
    size = next(iter(cases.values()))[0].shape[-1]
    volumes = [
        (cid, np.moveaxis(image, 0, 2), np.moveaxis(label, 0, 2), np.eye(4))
        for cid, (image, label) in cases.items()
    ]
    create_store(
        root,
        volumes,
        configuration=configuration or seed_configuration(size, keep="all"),
        splits=splits,
        modality=info.pop("modality", "ct"),
        info=info,
    )
    return root


def make_tiny_store(
    root: Path,
    cases: int = 4,
    slices: int = 6,
    size: int = 32,
    seed: int = 0,
    split: tuple[int, int, int] = (2, 1, 1),
    configuration: Any = None,
) -> Path:
    rng = np.random.default_rng(seed)
    ids = [f"amos_{i:04d}" for i in range(1, cases + 1)]
    made = {cid: make_case(rng, size, slices) for cid in ids}
    a, b, _ = split
    training = ids[: a + b]
    folds = cv_folds(training, ["ct"] * len(training), seed=seed)
    splits = {"train": ids[:a], "val": ids[a : a + b], "test": ids[a + b :], "folds": folds}
    return store_from_slices(root, made, splits, configuration, seed=seed, source="tiny")
