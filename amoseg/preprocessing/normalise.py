"""Intensity normalisation as plan data, applied on the device (the store keeps raw values).

The `seed` configuration records what the report's models do (a fixed HU window for CT,
`window`); the planned configurations use nnU-Net's rule. CT intensities mean the same in
every scan, so one dataset-wide mapping is used: clip to the foreground's 0.5/99.5
percentiles, then z-score with the foreground's mean/std (foreground = voxels under any organ
label, sampled over the planned cases). MR
intensities are arbitrary per scan, so each image is z-scored with its own mean/std (taken
from its preprocess record, so every slice or patch of one scan gets the same mapping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from amoseg.errors import AmosegError
from amoseg.preprocessing.preprocessor import PreprocessRecord

SCHEMES = ("ct", "window", "zscore", "none")


@dataclass(frozen=True)
class Normalisation:
    scheme: str  # "ct" (dataset-wide clip + z-score), "window", "zscore" (per image), "none"
    clip: tuple[float, float] | None = None  # CT: foreground 0.5 / 99.5 pct.; window: [lo, hi]
    mean: float | None = None  # CT: foreground mean
    std: float | None = None  # CT: foreground std

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise AmosegError(
                f"normalisation.scheme must be one of {', '.join(SCHEMES)}, got {self.scheme!r}"
            )
        if self.scheme == "ct":
            numbers = [*(self.clip or ()), self.mean, self.std]
            if self.clip is None or any(v is None or not math.isfinite(v) for v in numbers):
                raise AmosegError("normalisation 'ct' needs finite clip [lo, hi], mean and std")
            if not self.clip[0] < self.clip[1]:
                raise AmosegError(f"normalisation.clip must be [lo, hi] with lo < hi: {self.clip}")
            if not self.std > 0:  # type: ignore[operator]
                raise AmosegError(f"normalisation.std must be > 0, got {self.std}")
        if self.scheme == "window" and (self.clip is None or not self.clip[0] < self.clip[1]):
            raise AmosegError(f"normalisation 'window' needs clip [lo, hi], lo < hi: {self.clip}")

    def apply(self, x: torch.Tensor, record: PreprocessRecord | None = None) -> torch.Tensor:
        """Raw stored intensities (any shape, any device) → network input (float32)."""
        x = x.float()
        if self.scheme == "ct":
            lo, hi = self.clip  # type: ignore[misc]
            return (x.clamp(lo, hi) - self.mean) / self.std  # type: ignore[operator]
        if self.scheme == "window":  # the seed U-Nets' fixed HU window → [-1, 1]
            lo, hi = self.clip  # type: ignore[misc]
            return (x.clamp(lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)
        if self.scheme == "zscore":
            if record is not None and record.intensity:
                mean, std = record.intensity["mean"], record.intensity["std"]
            else:
                mean, std = float(x.mean()), float(x.std(unbiased=False))
            return (x - mean) / max(std, 1e-8)
        return x

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "clip": None if self.clip is None else [float(v) for v in self.clip],
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normalisation:
        clip = data.get("clip")
        return cls(
            scheme=str(data.get("scheme")),
            clip=None if clip is None else (float(clip[0]), float(clip[1])),
            mean=None if data.get("mean") is None else float(data["mean"]),
            std=None if data.get("std") is None else float(data["std"]),
        )
