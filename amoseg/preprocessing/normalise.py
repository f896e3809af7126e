"""Intensity normalisation as plan data, applied on the device (the store keeps raw values).

The `seed` configuration records what the report's models do (a fixed HU window for CT,
`window`); the planned configurations use nnU-Net's rule. CT intensities mean the same in
every scan, so one dataset-wide mapping is used: clip to the foreground's 0.5/99.5
percentiles, then z-score with the foreground's mean/std (foreground = voxels under any organ
label, sampled over the planned cases). MR
intensities are arbitrary per scan, so each image is z-scored with its own mean/std over the
whole preprocessed image (`image_stats`): computed once per scan (by prepare into the case's
record, by the segmenter before inference) and handed in, so a slice or a patch never
normalises itself on its own statistics.

`normalise` is the one implementation; `NormaliseModule` puts it in front of a network, so a
saved or exported model takes raw intensities (and, for `zscore`, the image's two statistics).
`maxabs` is the report's seed U-Net: each input slice divided by its own peak, by definition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from amoseg.errors import AmosegError
from amoseg.preprocessing.preprocessor import PreprocessRecord

SCHEMES = ("ct", "window", "zscore", "maxabs", "none")


@dataclass(frozen=True)
class Normalisation:
    scheme: str  # "ct" (dataset-wide clip + z-score), "window", "zscore" (per image),
    # "maxabs" (per slice: the report's seed U-Net), "none"
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

    @property
    def needs_stats(self) -> bool:
        """Whether the mapping needs the whole image's mean/std (`image_stats`)."""
        return self.scheme == "zscore"

    def apply(self, x: torch.Tensor, record: PreprocessRecord | None = None) -> torch.Tensor:
        """Raw stored intensities of one whole image, or a part of it whose record holds the
        image's statistics (any shape, any device) → network input (float32)."""
        stats = None
        if self.needs_stats:
            if record is not None and record.intensity:
                values = [record.intensity["mean"], record.intensity["std"]]
                stats = torch.tensor(values, dtype=torch.float32, device=x.device)
            else:  # x is the whole image
                stats = image_stats(x)
        return normalise(x, self, stats)

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


def image_stats(volume: torch.Tensor) -> torch.Tensor:
    """(2,) float32 [mean, std] of every voxel of a whole preprocessed image (float64 sums:
    a 512×512×300 volume in float32 would lose digits), as prepare records them."""
    v = volume.detach().double()
    mean = v.mean()
    std = (v.square().mean() - mean * mean).clamp_min(0.0).sqrt()
    return torch.stack([mean, std]).float()


def normalise(x: torch.Tensor, norm: Normalisation, stats: torch.Tensor | None) -> torch.Tensor:
    """The one implementation of every scheme. x: (B, C, *spatial) or any shape for the
    dataset-wide schemes; `stats`: (2,) or (B, 2) [mean, std] per image for `zscore`."""
    x = x.float()
    if norm.scheme == "ct":
        lo, hi = norm.clip  # type: ignore[misc]
        return (x.clamp(lo, hi) - norm.mean) / norm.std  # type: ignore[operator]
    if norm.scheme == "window":  # the seed U-Nets' fixed HU window → [-1, 1]
        lo, hi = norm.clip  # type: ignore[misc]
        return (x.clamp(lo, hi) - (lo + hi) / 2) / ((hi - lo) / 2)
    if norm.scheme == "zscore":
        if stats is None:
            raise ValueError("z-score normalisation needs the whole image's mean and std")
        stats = stats.to(x.device, torch.float32).reshape(-1, 2)
        shape = (-1,) + (1,) * (x.ndim - 1)
        mean, std = stats[:, 0].reshape(shape), stats[:, 1].reshape(shape)
        return (x - mean) / std.clamp_min(1e-8)
    if norm.scheme == "maxabs":  # per slice by the report's definition
        peak = x.abs().amax(dim=tuple(range(1, x.ndim)), keepdim=True)
        return x / peak.clamp_min(1e-6)
    return x


class NormaliseModule(torch.nn.Module):
    """`normalise` in front of a network core: forward(x, stats=None)."""

    def __init__(self, norm: Normalisation):
        super().__init__()
        self.normalisation = norm

    @property
    def needs_stats(self) -> bool:
        return self.normalisation.needs_stats

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        return normalise(x, self.normalisation, stats)
