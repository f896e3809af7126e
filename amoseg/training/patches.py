"""3D training patches from a store's per-case volumes, one third foreground-oversampled.

The smallest patch sampler the 3D recipe needs (nnU-Net's scheme): a third of the patches are
centred on a voxel of an organ chosen at random among those the case contains, so small
organs (adrenal glands, esophagus) are seen often; the rest lie anywhere in the volume.
Volumes smaller than the patch are padded (image: its minimum, label: background).

It reads any store whose `image(case)` / `label(case)` are memory-mapped 3D arrays (the
slice store's (N, S, S) stacks of a `--keep all` store are such volumes). Item i is fully
determined by (seed, i): the epoch sampler picks a fresh random subset of item numbers each
epoch, so a resumed run replays exactly the same patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

#: nnU-Net's share of foreground-centred patches
FOREGROUND_SHARE = 1 / 3
#: item numbers available per case (each a distinct random patch); an epoch uses a subset
DRAWS_PER_CASE = 10_000
#: foreground voxel positions remembered per organ and case (sampled, to bound memory)
FOREGROUND_SAMPLES = 2_000


class PatchDataset(Dataset):
    """Item i → (x int16 (1, *patch), y uint8 (*patch)) from case i % n_cases."""

    def __init__(
        self,
        store: Any,
        split: str,
        patch: Sequence[int],
        *,
        seed: int = 0,
        foreground: float = FOREGROUND_SHARE,
        samples_per_epoch: int | None = None,
    ):
        self.store, self.patch = store, tuple(int(p) for p in patch)
        self.case_ids = list(store.cases(split))
        self.seed, self.foreground = int(seed), float(foreground)
        rng = np.random.default_rng([self.seed, 0xF6])
        self.locations = [_foreground_locations(store.label(c), rng) for c in self.case_ids]
        self.fill = [int(np.min(store.image(c))) for c in self.case_ids]  # pad with "air"
        # nnU-Net draws 250 batches of 2 per epoch; here by default each case twice per epoch
        self.samples_per_epoch = samples_per_epoch or 2 * len(self.case_ids)

    def __len__(self) -> int:
        return len(self.case_ids) * DRAWS_PER_CASE

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        ci = i % len(self.case_ids)
        rng = np.random.default_rng([self.seed, int(i)])
        image = self.store.image(self.case_ids[ci])
        label = self.store.label(self.case_ids[ci])
        shape = np.asarray(image.shape)
        organs = self.locations[ci]
        if organs and rng.random() < self.foreground:
            voxels = organs[sorted(organs)[int(rng.integers(len(organs)))]]
            centre = voxels[int(rng.integers(len(voxels)))]
            start = centre - np.asarray(self.patch) // 2
        else:
            start = np.array([int(rng.integers(0, max(1, n - p + 1))) for n, p in
                              zip(shape, self.patch, strict=True)])  # fmt: skip
            start -= np.maximum(0, np.asarray(self.patch) - shape) // 2  # centre small volumes
        x = _cut(image, start, self.patch, fill=self.fill[ci])
        y = _cut(label, start, self.patch, fill=0)
        return torch.from_numpy(x[None].astype(np.int16)), torch.from_numpy(y.astype(np.uint8))


def _foreground_locations(label: np.ndarray, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """organ id → (k, 3) voxel positions (at most FOREGROUND_SAMPLES, sampled)."""
    arr = np.asarray(label)
    where_all = np.argwhere(arr > 0)  # one pass over the volume, then grouped by organ
    ids = arr[tuple(where_all.T)]
    out: dict[int, np.ndarray] = {}
    for organ in np.unique(ids):
        where = where_all[ids == organ]
        if len(where) > FOREGROUND_SAMPLES:
            where = where[rng.choice(len(where), FOREGROUND_SAMPLES, replace=False)]
        out[int(organ)] = where
    return out


def _cut(volume: np.ndarray, start: np.ndarray, patch: tuple[int, ...], fill: int) -> np.ndarray:
    """volume[start : start + patch], padded with `fill` where the window leaves the volume."""
    out = np.full(patch, fill, dtype=volume.dtype)
    src, dst = [], []
    for s, p, n in zip(start, patch, volume.shape, strict=True):
        lo, hi = max(0, int(s)), min(int(n), int(s) + p)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[tuple(dst)] = volume[tuple(src)]
    return out
