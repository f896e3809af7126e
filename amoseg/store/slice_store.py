"""The prepared slice store: what `prepare` writes and what training streams from.

Layout (one folder per case, written atomically so a crash never leaves a half case)::

    STORE/store.json              settings of the run that built it (size, keep, seed, ...)
    STORE/splits.json             {"train": [case ids], "val": [...], "test": [...]}
    STORE/cases/<case_id>/image.npy   int16 HU (float32 for float sources such as scaled MR),
                                      shape (n_slices, X, Y): axial planes of the RAS+ grid
                                      (size×size for the `seed` configuration)
    STORE/cases/<case_id>/label.npy   uint8 AMOS ids 0..15, same shape
    STORE/cases/<case_id>/meta.json   original shape/affine/spacing, kept slice indices, ...
    STORE/cases/<case_id>/previous.npy  a cascade store only (`3d_cascade_fullres`): uint8
                                      labels of the previous stage on this grid, same shape
                                      (`amoseg.store.cascade`)

Arrays are opened memory-mapped, so a training process touches only the slices it reads and
its RAM does not grow with the number of cases.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import atomic_dir, read_json, write_json
from amoseg.errors import AmosegError

STORE_VERSION = 1
SPLITS = ("train", "val", "test")


def image_dtype(image: np.ndarray) -> np.dtype:
    """The store's dtype for an image: float sources keep float32 precision (MR scaled to
    [0, 1] would round to 0/1 as int16); integer sources are int16 (half the bytes)."""
    return np.dtype(np.float32 if np.issubdtype(image.dtype, np.floating) else np.int16)


def write_case(
    root: str | Path,
    case_id: str,
    image: np.ndarray,
    label: np.ndarray,
    meta: dict[str, Any],
) -> Path:
    """Write one case's (Z, X, Y) volume and metadata as a unit (temp folder, then rename)."""
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and label {label.shape} must be equal (Z, X, Y)")
    target = Path(root) / "cases" / case_id
    dtype = image_dtype(image)
    with atomic_dir(target) as tmp:
        np.save(tmp / "image.npy", np.ascontiguousarray(image, dtype=dtype))
        np.save(tmp / "label.npy", np.ascontiguousarray(label, dtype=np.uint8))
        write_json(
            tmp / "meta.json",
            {
                "case_id": case_id,
                "n_slices": int(image.shape[0]),
                "image_dtype": dtype.name,
                **meta,
            },
        )
    return target


class CaseWriter:
    """Streams one case's planes to disk chunk by chunk (see `case_writer`), so the resized
    stack never has to sit in RAM: at 640² it can outweigh the scan it came from."""

    def __init__(
        self,
        folder: Path,
        case_id: str,
        n_slices: int,
        size: int | tuple[int, int],
        dtype: Any = np.int16,
    ):
        self.folder, self.case_id, self.n_slices, self.written = folder, case_id, n_slices, 0
        self.plane = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        self.dtype = np.dtype(dtype)
        self._files = {}
        for name, file_dtype in (("image", self.dtype), ("label", np.dtype(np.uint8))):
            fh = open(folder / f"{name}.npy", "wb")  # noqa: SIM115 - closed in finish/close
            self._files[name] = fh
            header = {
                "descr": np.lib.format.dtype_to_descr(file_dtype),
                "fortran_order": False,
                "shape": (n_slices, *self.plane),
            }
            np.lib.format.write_array_header_1_0(fh, header)  # the header np.save writes
        self.finished = False

    def append(self, image: np.ndarray, label: np.ndarray) -> None:
        """Add (k, X, Y) image and uint8 label planes after those written so far."""
        if image.shape != label.shape or image.shape[1:] != self.plane:
            raise ValueError(f"chunk shapes {image.shape}/{label.shape} do not fit the case")
        if self.written + image.shape[0] > self.n_slices:
            raise ValueError(f"more than the {self.n_slices} slices announced")
        self._files["image"].write(memoryview(np.ascontiguousarray(image, dtype=self.dtype)))
        self._files["label"].write(memoryview(np.ascontiguousarray(label, dtype=np.uint8)))
        self.written += image.shape[0]

    def finish(self, meta: dict[str, Any]) -> None:
        """Close the arrays and write meta.json; the case becomes visible when the
        `case_writer` block ends."""
        if self.written != self.n_slices:
            raise ValueError(f"wrote {self.written} of {self.n_slices} slices")
        self.close()
        write_json(
            self.folder / "meta.json",
            {
                "case_id": self.case_id,
                "n_slices": self.n_slices,
                "image_dtype": self.dtype.name,
                **meta,
            },
        )
        self.finished = True

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()


@contextlib.contextmanager
def case_writer(
    root: str | Path,
    case_id: str,
    n_slices: int,
    size: int | tuple[int, int],
    dtype: Any = np.int16,
) -> Iterator[CaseWriter]:
    """Like `write_case`, but streaming: `append` chunks, then `finish(meta)`; the case folder
    appears atomically at the end of the block, or not at all. `size` is S (S×S planes) or
    the (X, Y) plane shape of a planned configuration."""
    with atomic_dir(Path(root) / "cases" / case_id) as tmp:
        writer = CaseWriter(tmp, case_id, n_slices, size, dtype)
        try:
            yield writer
        finally:
            writer.close()
        if not writer.finished:
            raise ValueError("case_writer block ended without finish(meta)")


def case_done(root: str | Path, case_id: str) -> bool:
    """A case folder exists only once complete (atomic rename), so existence means done."""
    return (Path(root) / "cases" / case_id / "meta.json").exists()


def _open_array(path: Path) -> np.ndarray:
    """Memory-map a case array; a damaged file (edited, copied half-way) is a user error."""
    try:
        return np.load(path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise AmosegError(
            "store case file is missing", path, "re-run `amoseg prepare` on the same folder"
        ) from exc
    except (ValueError, OSError, EOFError) as exc:
        raise AmosegError(
            f"store case file is truncated or corrupt ({' '.join(str(exc).split())[:120]})",
            path,
            "delete its case folder and re-run `amoseg prepare` on the same folder",
        ) from exc


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
        # as on disk: a training fold replaces train/val in `splits`, not the store's identity
        self.stored_splits: dict[str, Any] = json.loads(json.dumps(self.splits))
        for name in SPLITS:
            self.splits.setdefault(name, [])
        #: plan configuration fields a run trains with instead of the stored ones
        #: (`TrainSettings.patch_size`; set by `amoseg.training.train`, never written)
        self.overrides: dict[str, Any] = {}
        self._stats: dict[str, tuple[float, float]] = {}  # image_stats of older stores

    @property
    def configuration_name(self) -> str:
        """The plan configuration the store was prepared with (stores from before plans
        existed are `seed` stores)."""
        return str(self.info.get("configuration", "seed"))

    @property
    def configuration(self) -> Any:
        """The plan `Configuration` the store was prepared with, with `overrides` applied."""
        from amoseg.planning.plan import Configuration
        from amoseg.planning.planner import seed_configuration

        plan = self.info.get("plan")
        if plan is None:
            config = seed_configuration(self.size, keep=str(self.info.get("keep", "organ")))
        else:
            config = Configuration.from_dict(
                self.configuration_name, plan, self.root / "store.json"
            )
        return config.with_overrides(**self.overrides)

    @property
    def size(self) -> int | None:
        """S of a `seed` store's S×S slices; None for a planned configuration (2d, 3d), whose
        cases keep their own plane shapes (read them with `amoseg.store.samplers`)."""
        size = self.info.get("size")
        return None if size is None else int(size)

    def identity(self) -> dict[str, Any]:
        """What a run records about its store and checks again on resume and evaluate."""
        from amoseg.store.store import store_identity

        return store_identity(self.info, self.stored_splits)

    def cases(self, split: str) -> list[str]:
        if split not in SPLITS:
            raise AmosegError(f"unknown split '{split}'", hint=f"use one of {', '.join(SPLITS)}")
        return [c for c in self.splits[split] if case_done(self.root, c)]

    def meta(self, case_id: str) -> dict[str, Any]:
        return read_json(self.root / "cases" / case_id / "meta.json", "case meta.json")

    def image_stats(self, case_id: str) -> tuple[float, float]:
        """The stored image's (mean, std) over all its voxels, for a per-image z-score: as
        prepare recorded it, or computed once from the volume for older stores."""
        intensity = (self.meta(case_id).get("preprocess") or {}).get("intensity") or {}
        if "mean" in intensity and "std" in intensity:
            return float(intensity["mean"]), float(intensity["std"])
        if case_id not in self._stats:
            import torch

            from amoseg.preprocessing.normalise import image_stats

            mean, std = image_stats(torch.from_numpy(np.asarray(self.image(case_id)))).tolist()
            self._stats[case_id] = (float(mean), float(std))
        return self._stats[case_id]

    def image(self, case_id: str) -> np.ndarray:
        """(Z, X, Y) memory-mapped: int16 (integer sources) or float32 (float sources)."""
        return _open_array(self.root / "cases" / case_id / "image.npy")

    def label(self, case_id: str) -> np.ndarray:
        """(N, S, S) uint8, memory-mapped."""
        return _open_array(self.root / "cases" / case_id / "label.npy")

    @property
    def previous_stage(self) -> dict[str, Any] | None:
        """A cascade store's record of its previous stage (`amoseg.store.cascade`), else None."""
        previous = self.info.get("previous")
        return previous if isinstance(previous, dict) else None

    def previous(self, case_id: str) -> np.ndarray:
        """A cascade store's (Z, X, Y) uint8 previous-stage labels, memory-mapped."""
        from amoseg.store.cascade import PREVIOUS_FILE

        return _open_array(self.root / "cases" / case_id / PREVIOUS_FILE)

    def model_input(self, case_id: str) -> np.ndarray:
        """What a model of this store takes for a whole case: the (Z, X, Y) image, or for a
        cascade store (2, Z, X, Y) [image, previous-stage labels] as float32."""
        if self.previous_stage is None:
            return self.image(case_id)
        image = np.asarray(self.image(case_id), dtype=np.float32)
        return np.stack([image, np.asarray(self.previous(case_id), dtype=np.float32)])

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
