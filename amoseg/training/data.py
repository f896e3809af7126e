"""Streaming training slices from the prepared store.

`SliceDataset` reads each sample's rows straight from the case's .npy file (header offset
known, one `np.fromfile` per sample): nothing is cached, no file stays mapped, so a worker's
RAM does not grow with the number of cases. Samples stay compact (int16 image, uint8 label)
until they reach the device, where they become float32 / int64 — 4× less host→device traffic.

`EpochSampler` is torch's DistributedSampler (rank sharding, padding to equal length) plus an
optional per-epoch cap on the number of slices (a fresh random subset each epoch). The order
depends only on (seed, epoch), so a resumed run replays exactly the same batches.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from amoseg.store.samplers import EpochPatches, PatchDataset


class SliceDataset(Dataset):
    """Item i → (x (1+2c, S, S) with edge slices repeated, y uint8 (S, S)); x is int16, or
    float32 for a case prepared from a float image."""

    def __init__(
        self, store: Any, split: str = "train", context: int = 0, with_stats: bool = False
    ):
        self.context = context
        if store.size is None:
            from amoseg.errors import AmosegError

            raise AmosegError(
                f"the store holds the '{store.configuration_name}' configuration, whose cases "
                "have their own plane shapes, not S×S slices",
                store.root,
                "train a patch model (e.g. unet3d) on it, or prepare a seed store (--size S)",
            )
        self.size = store.size
        # per case: image path, offset, dtype, label path, offset, number of planes
        self.cases: list[tuple[str, int, np.dtype, str, int, int]] = []
        self.index: list[tuple[int, int]] = []
        for case in store.cases(split):
            img, lab = store.image(case), store.label(case)
            n = int(img.shape[0])
            self.cases.append(
                (
                    str(img.filename),
                    int(img.offset),
                    img.dtype,
                    str(lab.filename),
                    int(lab.offset),
                    n,
                )
            )
            self.index += [(len(self.cases) - 1, i) for i in range(n)]
            del img, lab
        cases = store.cases(split)
        #: per case, the whole image's [mean, std] (a per-image z-score), when asked for
        self.stats = [store.image_stats(c) for c in cases] if with_stats else None

    def __len__(self) -> int:
        return len(self.index)

    def _rows(self, path: str, offset: int, dtype: Any, lo: int, hi: int) -> np.ndarray:
        plane = self.size * self.size
        itemsize = np.dtype(dtype).itemsize
        flat = np.fromfile(
            path, dtype=dtype, count=(hi - lo) * plane, offset=offset + lo * plane * itemsize
        )
        return flat.reshape(hi - lo, self.size, self.size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        ci, z = self.index[i]
        img_path, img_off, img_dtype, lab_path, lab_off, n = self.cases[ci]
        lo, hi = max(0, z - self.context), min(n, z + self.context + 1)
        rows = self._rows(img_path, img_off, img_dtype, lo, hi)
        want = np.clip(np.arange(z - self.context, z + self.context + 1), 0, n - 1) - lo
        x = torch.from_numpy(np.ascontiguousarray(rows[want]))
        y = torch.from_numpy(self._rows(lab_path, lab_off, np.uint8, z, z + 1)[0].copy())
        if self.stats is None:
            return x, y
        return x, y, torch.tensor(self.stats[ci], dtype=torch.float32)


def training_dataset(
    store: Any, context: int, seed: int, with_stats: bool = False, split: str = "train"
) -> Dataset:
    """What the trainer streams: a seed store's S×S slices (`SliceDataset`), or, for a
    planned store (no single S), patches of its configuration's `patch_size` with
    nnU-Net's foreground oversampling (`amoseg.store.samplers.PatchDataset`). `split` "val":
    the same kind of samples from the validation cases (per-epoch pseudo-Dice)."""
    if store.info.get("size") is not None:
        return SliceDataset(store, split, context, with_stats)
    patch = store.configuration.patch_size
    patches = PatchDataset(store, split, patch, context=context, seed=seed, with_stats=with_stats)
    return EpochPatches(patches)


class EpochSampler(DistributedSampler):
    """DistributedSampler with an optional cap on slices per epoch (across all ranks)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        cap: int | None = None,
    ):
        super().__init__(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        n = len(dataset)  # type: ignore[arg-type]
        self.per_epoch = min(n, cap) if cap else n
        self.num_samples = math.ceil(self.per_epoch / world)
        self.total_size = self.num_samples * world

    def limit(self, samples: int) -> None:
        """Draw at most `samples` per epoch (all ranks) from now on (a time budget's epochs)."""
        self.per_epoch = max(1, min(self.per_epoch, int(samples)))
        self.num_samples = math.ceil(self.per_epoch / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g)[: self.per_epoch].tolist()
        order += order[: self.total_size - len(order)]  # pad so every rank has equal steps
        if isinstance(self.dataset, EpochPatches):  # fresh patches each epoch
            order = [self.epoch * len(self.dataset) + i for i in order]
        return iter(order[self.rank : self.total_size : self.num_replicas])


def make_loader(
    dataset: Dataset, sampler: EpochSampler, batch_size: int, workers: int, pin_memory: bool
) -> DataLoader:
    """Workers read ahead (prefetch 4 batches each) and stay alive across epochs; pinned
    memory lets the host→GPU copy overlap compute (non_blocking)."""
    drop_last = len(sampler) >= batch_size  # BatchNorm needs > 1 sample per batch
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        drop_last=drop_last,
    )
