"""The one interface every model family implements, so train/evaluate/compare/tune are loops.

A model sees slices from the prepared store at the store's size (S×S), in raw stored units
(HU for CT). Each model owns its own intensity normalisation, because the report's models
differ there (e.g. the seed U-Net divides by the maximum intensity).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from amoseg.data.crop import Box, body_box
from amoseg.labels import NUM_CLASSES


class SegmentationModel(ABC):
    """fit on a store's train split; predict batches of slices; save/load a run folder."""

    name: ClassVar[str]
    #: Adjacent slices on each side fed as extra channels (0 = plain 2D, 1 = 2.5D with 3 ch).
    context: int = 0
    num_classes: int = NUM_CLASSES
    #: raw intensity above which a voxel is body, for models that score only the body's box
    #: (trained on such crops: see amoseg.data.crop); None scores whole slices.
    body_threshold: float | None = None
    #: the network's down-sampling factor: input sides must be multiples of it.
    size_multiple: int = 1

    @abstractmethod
    def fit(self, store: Any, settings: Any, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
        """Train on `store`'s train split, validating each epoch; returns final metrics."""

    @abstractmethod
    def predict_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x: (B, 1 + 2*context, S, S) float32 raw intensities →
        (labels uint8 (B, S, S), probabilities float32 (B, num_classes, S, S))."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write the learned state to `path` (a checkpoint file inside a run folder)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, device: str = "auto") -> SegmentationModel:
        """Rebuild a model from a checkpoint written by `save`."""

    def context_stack(self, slices: np.ndarray, start: int, stop: int) -> np.ndarray:
        """(stop-start, 1+2c, S, S) inputs for slices[start:stop], edge slices repeated."""
        n = slices.shape[0]
        offsets = np.arange(-self.context, self.context + 1)
        idx = np.clip(np.arange(start, stop)[:, None] + offsets[None, :], 0, n - 1)
        return np.asarray(slices[idx], dtype=np.float32)

    def volume_box(self, slices: np.ndarray) -> Box | None:
        """The box of one volume's (N, S, S) stack that this model scores (None: all of it),
        the same one `predict` uses."""
        if self.body_threshold is None:
            return None
        return body_box(slices, self.body_threshold, self.size_multiple)

    def predict_volume(self, slices: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Label every slice of one volume's (N, S, S) stack → (N, S, S) uint8."""
        out = np.empty(slices.shape, dtype=np.uint8)
        for start in range(0, slices.shape[0], batch_size):
            stop = min(start + batch_size, slices.shape[0])
            out[start:stop] = self.predict_batch(self.context_stack(slices, start, stop))[0]
        return out
