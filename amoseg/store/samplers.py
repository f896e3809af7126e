"""Samplers over the volume store: 2D patches, 2.5D stacks and 3D patches, with nnU-Net's
foreground oversampling.

Every case of a store is a (Z, X, Y) volume on its configuration's grid (RAS+ axes). A
sample is a patch of the configuration's `patch_size` ((x, y) for 2D, (x, y, z) for 3D) cut
from one case; where the patch reaches past the volume it is padded (image with the lowest
value read, label with background). Of every three samples one is centred on a voxel of an
organ drawn at random among those the case holds (nnU-Net's one third, class-balanced so the
adrenal glands are seen as often as the liver); the others are placed uniformly, so the
batch still sees what the scan looks like away from organs.

Samples are a pure function of (seed, epoch, index): a resumed run replays the same batches,
and DataLoader workers need no shared state. Images stay in their stored dtype (int16 or
float32) until the device, where the plan's `Normalisation` maps them.

    ds = PatchDataset(store, "train", patch_size=(128, 128, 64))       # 3D: x (1, 64, 128, 128)
    ds = PatchDataset(store, "train", patch_size=(256, 256), context=1) # 2.5D: x (3, 256, 256)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from amoseg.preprocessing.geometry import array_order

#: share of samples centred on a foreground voxel (nnU-Net's oversample_foreground_percent).
FOREGROUND_SHARE = 1 / 3
#: foreground voxel positions remembered per case (sampled once, seeded).
FOREGROUND_POSITIONS = 10_000


class PatchDataset(Dataset):
    """Item i → (x (C, [Z,] X, Y) raw intensities, y uint8 ([Z,] X, Y)), plus, with
    `with_stats`, the whole image's (2,) [mean, std] (a per-image z-score: the patch never
    normalises itself).

    patch_size: (x, y) for 2D samples (one plane, plus `context` planes on each side as
    channels: 2.5D) or (x, y, z) for 3D patches (one channel). `length` is the number of
    samples per epoch (default: `default_length`). Call `set_epoch` each epoch for fresh
    samples.
    """

    def __init__(
        self,
        store: Any,
        split: str,
        patch_size: Sequence[int],
        *,
        context: int = 0,
        foreground_share: float = FOREGROUND_SHARE,
        length: int | None = None,
        seed: int = 0,
        with_stats: bool = False,
        previous_transform: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    ):
        if len(patch_size) not in (2, 3):
            raise ValueError("patch_size is (x, y) or (x, y, z)")
        if len(patch_size) == 3 and context:
            raise ValueError("context (2.5D) is for 2D patches only")
        self.store, self.split = store, split
        self.patch = tuple(int(p) for p in patch_size)
        self.context = int(context)
        self.foreground_share = float(foreground_share)
        self.seed, self.epoch = int(seed), 0
        self.case_ids = list(store.cases(split))
        if not self.case_ids:
            raise ValueError(f"split {split!r} of the store has no cases")
        self.shapes = [tuple(store.label(c).shape) for c in self.case_ids]
        self.stats = [store.image_stats(c) for c in self.case_ids] if with_stats else None
        self.length = int(length) if length is not None else self.default_length()
        #: a cascade store: the previous stage's labels ride along as a second channel
        self.previous = getattr(store, "previous_stage", None) is not None
        #: training a cascade: the recipe's perturbation of those labels (a module-level
        #: function, so workers can take it: `amoseg.ops.previous_augment.perturb_previous`)
        self.previous_transform = previous_transform if self.previous else None
        self._foreground: dict[int, np.ndarray] = {}

    def default_length(self) -> int:
        """2D: one sample per stored plane; 3D: enough patches to cover each case about
        twice over."""
        if len(self.patch) == 2:
            return int(sum(s[0] for s in self.shapes))
        voxels = np.prod(self.patch)
        per_case = [max(1, int(2 * np.prod(s) // voxels)) for s in self.shapes]
        return int(sum(per_case))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def forced_foreground(self, i: int) -> bool:
        """Sample i is centred on foreground: the last of every three (nnU-Net puts them at
        the end of each batch), or the share's pattern for other shares."""
        share = self.foreground_share
        return share > 0 and int((i + 1) * share) > int(i * share)

    def foreground_positions(self, ci: int) -> dict[int, np.ndarray]:
        """organ id → (n, 3) z, x, y positions of up to FOREGROUND_POSITIONS of its voxels in
        case ci (sampled once, seeded)."""
        if ci not in self._foreground:
            label = np.asarray(self.store.label(self.case_ids[ci]))
            where = np.argwhere(label > 0)  # one pass over the volume, then grouped by organ
            ids = label[tuple(where.T)]
            rng = np.random.default_rng([self.seed, ci])
            found: dict[int, np.ndarray] = {}
            for organ in np.unique(ids):
                at = where[ids == organ]
                if len(at) > FOREGROUND_POSITIONS:
                    at = at[rng.choice(len(at), FOREGROUND_POSITIONS, replace=False)]
                found[int(organ)] = at
            self._foreground[ci] = found
        return self._foreground[ci]

    def _start(self, rng: np.random.Generator, ci: int, fg: bool) -> tuple[int, int, int]:
        """The patch's first (z, x, y) voxel (may be negative or past the end: padding)."""
        shape = self.shapes[ci]
        size = self._zxy_patch()
        organs = self.foreground_positions(ci) if fg else {}
        if organs:
            # an organ first, then one of its voxels (nnU-Net): small organs get their share
            positions = organs[sorted(organs)[int(rng.integers(len(organs)))]]
            centre = positions[int(rng.integers(len(positions)))]
            return tuple(int(c) - s // 2 for c, s in zip(centre, size, strict=True))  # type: ignore[return-value]
        starts = []
        for n, p in zip(shape, size, strict=True):
            lo, hi = min(0, n - p), max(0, n - p)
            starts.append(int(rng.integers(lo, hi + 1)))
        return tuple(starts)  # type: ignore[return-value]

    def _zxy_patch(self) -> tuple[int, int, int]:
        if len(self.patch) == 2:
            return 1, self.patch[0], self.patch[1]
        return array_order(self.patch)  # type: ignore[return-value]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        ci = int(rng.integers(len(self.case_ids)))
        z0, x0, y0 = self._start(rng, ci, self.forced_foreground(int(i)))
        pz, px, py = self._zxy_patch()
        case = self.case_ids[ci]
        image, label = self.store.image(case), self.store.label(case)
        if len(self.patch) == 2:
            planes = np.clip(np.arange(z0 - self.context, z0 + self.context + 1), 0, None)
            planes = np.minimum(planes, self.shapes[ci][0] - 1)
            x = np.stack([_window(image[int(z)], (x0, y0), (px, py)) for z in planes])
            y = _window(label[z0], (x0, y0), (px, py), fill=0)
        else:
            x = _window(image, (z0, x0, y0), (pz, px, py))[None]
            y = _window(label, (z0, x0, y0), (pz, px, py), fill=0)
            if self.previous:  # (2, Z, X, Y): image, previous-stage labels (as the image's dtype)
                prev = _window(self.store.previous(case), (z0, x0, y0), (pz, px, py), fill=0)
                if self.previous_transform is not None:
                    prev = self.previous_transform(prev, rng)
                x = np.concatenate([x, prev[None].astype(x.dtype)])
        sample = (
            torch.from_numpy(np.ascontiguousarray(x)),
            torch.from_numpy(np.ascontiguousarray(y)),
        )
        if self.stats is None:
            return sample
        return (*sample, torch.tensor(self.stats[ci], dtype=torch.float32))


def _window(
    array: np.ndarray, start: Sequence[int], size: Sequence[int], fill: float | None = None
) -> np.ndarray:
    """array[start : start + size] on every axis, padded where it reaches outside (with
    `fill`, or the lowest value read: air for CT)."""
    src = tuple(
        slice(max(0, s), min(n, s + p)) for s, p, n in zip(start, size, array.shape, strict=True)
    )
    part = np.asarray(array[src])
    if part.shape == tuple(size):
        return part.copy()
    value = fill if fill is not None else (part.min() if part.size else 0)
    out = np.full(tuple(size), value, dtype=array.dtype)
    dst = tuple(
        slice(max(0, -s), max(0, -s) + (sl.stop - sl.start))
        for s, sl in zip(start, src, strict=True)
    )
    out[dst] = part
    return out


def foreground_share(dataset: PatchDataset, n: int | None = None) -> float:
    """Share of the first n samples whose label patch holds any organ voxel."""
    n = min(len(dataset), n or len(dataset))
    return float(np.mean([bool((dataset[i][1] > 0).any()) for i in range(n)]))


class EpochPatches(Dataset):
    """A planned store's `PatchDataset` behind epoch-carrying indices: item k is sample
    k mod n of epoch k // n, so DataLoader workers (which hold their own copy of the
    dataset) draw fresh patches every epoch without shared state."""

    def __init__(self, patches: Any):
        self.patches = patches

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        n = len(self.patches)
        self.patches.set_epoch(k // n)
        return self.patches[k % n]
