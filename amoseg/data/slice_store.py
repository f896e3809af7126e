"""The prepared slice store: what `prepare` writes and what training streams from.

Layout (one folder per case, written atomically so a crash never leaves a half case)::

    STORE/store.json              settings of the run that built it (size, keep, seed, ...)
    STORE/splits.json             {"train": [case ids], "val": [...], "test": [...]}
    STORE/cases/<case_id>/image.npy   int16 HU (or scaled MR), shape (n_slices, size, size)
    STORE/cases/<case_id>/label.npy   uint8 AMOS ids 0..15, same shape
    STORE/cases/<case_id>/meta.json   original shape/affine/spacing, kept slice indices, ...

Arrays are opened memory-mapped, so a training process touches only the slices it reads and
its RAM does not grow with the number of cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import atomic_dir, read_json, write_json
from amoseg.errors import AmosegError

STORE_VERSION = 1
SPLITS = ("train", "val", "test")


def write_case(
    root: str | Path,
    case_id: str,
    image: np.ndarray,
    label: np.ndarray,
    meta: dict[str, Any],
) -> Path:
    """Write one case's slices and metadata as a unit (temp folder, then rename)."""
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and label {label.shape} must be equal (N, S, S)")
    target = Path(root) / "cases" / case_id
    with atomic_dir(target) as tmp:
        np.save(tmp / "image.npy", np.ascontiguousarray(image, dtype=np.int16))
        np.save(tmp / "label.npy", np.ascontiguousarray(label, dtype=np.uint8))
        write_json(tmp / "meta.json", {"case_id": case_id, "n_slices": int(image.shape[0]), **meta})
    return target


def case_done(root: str | Path, case_id: str) -> bool:
    """A case folder exists only once complete (atomic rename), so existence means done."""
    return (Path(root) / "cases" / case_id / "meta.json").exists()


@dataclass(frozen=True)
class SliceRef:
    case_id: str
    index: int  # position in the case's stored slice stack


class SliceStore:
    """Read-only view of a prepared store."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not (self.root / "store.json").exists():
            raise AmosegError(
                "not a prepared slice store (no store.json)",
                self.root,
                "run `amoseg prepare AMOS_ROOT OUT` first and pass OUT",
            )
        self.info: dict[str, Any] = read_json(self.root / "store.json", "store.json")
        self.splits: dict[str, list[str]] = read_json(self.root / "splits.json", "splits.json")
        for name in SPLITS:
            self.splits.setdefault(name, [])

    @property
    def size(self) -> int:
        return int(self.info["size"])

    def cases(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise AmosegError(f"unknown split '{split}'", hint=f"use one of {', '.join(SPLITS)}")
        return [c for c in self.splits[split] if case_done(self.root, c)]

    def meta(self, case_id: str) -> dict[str, Any]:
        return read_json(self.root / "cases" / case_id / "meta.json", "case meta.json")

    def image(self, case_id: str) -> np.ndarray:
        """(N, S, S) int16, memory-mapped."""
        return np.load(self.root / "cases" / case_id / "image.npy", mmap_mode="r")

    def label(self, case_id: str) -> np.ndarray:
        """(N, S, S) uint8, memory-mapped."""
        return np.load(self.root / "cases" / case_id / "label.npy", mmap_mode="r")

    def n_slices(self, case_id: str) -> int:
        return int(self.meta(case_id)["n_slices"])

    def slice_refs(self, split: str) -> list[SliceRef]:
        return [SliceRef(c, i) for c in self.cases(split) for i in range(self.n_slices(c))]

    @cached_property
    def class_pixel_counts(self) -> np.ndarray:
        """Per-class pixel counts over the training split (for class weights and priors)."""
        counts = np.zeros(16, dtype=np.int64)
        for case in self.cases("train"):
            counts += np.bincount(np.asarray(self.label(case)).ravel(), minlength=16)[:16]
        return counts

    def check_no_leakage(self) -> None:
        """Refuse a store whose splits share a case: test scores would be meaningless."""
        seen: dict[str, str] = {}
        for split in SPLITS:
            for case in self.splits[split]:
                if case in seen and seen[case] != split:
                    raise AmosegError(
                        f"case {case} is in both '{seen[case]}' and '{split}' splits",
                        self.root / "splits.json",
                        "re-run `amoseg prepare` to rebuild the splits",
                    )
                seen[case] = split
