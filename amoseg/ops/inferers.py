"""One inferer protocol for training validation, `evaluate` and `predict`.

In MONAI's terms: a *predictor* maps a batch of network inputs on the model grid to class
scores, (B, C, *spatial) float32 raw intensities → (B, K, *spatial) logits; an *inferer*
runs a predictor over one whole volume on the model grid, ``inferer(volume, predictor)``:
(Z, H, W) (axial slices first, as the store holds them) → (Z, K, H, W) scores.

- `SliceInferer`: a 2D network over the axial slices, each with `context` neighbours per
  side as extra channels (2.5D, edge slices repeated), `batch_size` slices per call,
  optionally only on the body's box (models trained on such crops: amoseg.preprocessing.crop).
- `SlidingWindowInferer`: a 3D network over overlapping patches blended with Gaussian
  weights (nnU-Net's tiles and weights, `amoseg.ops.sliding`, summed in float32).

Both also hand their scores out as `Slab`s (runs of consecutive slices, only over the box
they scored), so a caller that reduces scores slice by slice — labels on the stored grid for
validation, the scan-grid arg-max of `predict` — never holds a whole volume of 16-class
scores in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from amoseg.labels import NUM_CLASSES
from amoseg.preprocessing.crop import Box, body_box
from amoseg.preprocessing.normalise import image_stats

#: logits that make a pixel outside the scored box background (finite: they get resized).
OUTSIDE_LOGIT = -1e4


class Predictor(Protocol):
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) float32 raw intensities → (B, K, *spatial) logits."""
        ...


@dataclass
class Slab:
    """Scores of slices `start`..`stop` of a volume whose slices are `frame` (H, W) big;
    they cover only `box` of the frame (None: all of it), the rest is background."""

    start: int
    scores: torch.Tensor  # (n, K, h, w)
    box: Box | None
    frame: tuple[int, int]

    @property
    def stop(self) -> int:
        return self.start + int(self.scores.shape[0])

    def framed(self) -> torch.Tensor:
        """(n, K, H, W) scores over the whole frame (background logits outside the box)."""
        if self.box is None:
            return self.scores
        n, k = self.scores.shape[:2]
        out = self.scores.new_full((n, k, *self.frame), OUTSIDE_LOGIT)
        out[:, 0] = 0.0
        out[:, :, self.box[0], self.box[1]] = self.scores
        return out

    def labels(self) -> torch.Tensor:
        """(n, H, W) uint8 arg-max over classes, background outside the box."""
        inner = channel_argmax(self.scores)
        if self.box is None:
            return inner
        out = inner.new_zeros((inner.shape[0], *self.frame))
        out[:, self.box[0], self.box[1]] = inner
        return out


class Inferer(Protocol):
    def slabs(self, volume: Any, predictor: Predictor) -> Iterator[Slab]:
        """The volume's scores, a run of slices at a time, in order."""
        ...

    def __call__(self, volume: Any, predictor: Predictor) -> torch.Tensor:
        """(Z, H, W) raw intensities → (Z, K, H, W) scores."""
        ...


def as_volume(volume: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """A (Z, H, W) volume as a tensor (NumPy and memory-mapped arrays are copied once)."""
    if not isinstance(volume, torch.Tensor):
        volume = torch.from_numpy(np.array(volume))  # a writable copy: torch refuses read-only
    return volume if device is None else volume.to(device)


class _VolumeInferer:
    def slabs(self, volume: Any, predictor: Predictor) -> Iterator[Slab]:
        raise NotImplementedError

    def __call__(self, volume: Any, predictor: Predictor) -> torch.Tensor:
        return torch.cat([slab.framed() for slab in self.slabs(volume, predictor)])


class SliceInferer(_VolumeInferer):
    """A 2D / 2.5D network over a volume's axial slices (see the module docstring)."""

    def __init__(
        self,
        context: int = 0,
        batch_size: int = 8,
        body_threshold: float | None = None,
        size_multiple: int = 1,
    ):
        self.context = int(context)
        self.batch_size = max(1, int(batch_size))
        self.body_threshold = body_threshold
        self.size_multiple = int(size_multiple)

    def box(self, volume: torch.Tensor) -> Box | None:
        """The body's box of the whole volume (one per volume, so slices batch together)."""
        if self.body_threshold is None:
            return None
        return body_box(volume, self.body_threshold, self.size_multiple)

    def slabs(self, volume: Any, predictor: Predictor) -> Iterator[Slab]:
        volume = as_volume(volume)
        n = int(volume.shape[0])
        frame = (int(volume.shape[1]), int(volume.shape[2]))
        box = self.box(volume)
        inner = volume if box is None else volume[:, box[0], box[1]].contiguous()
        offsets = torch.arange(-self.context, self.context + 1, device=volume.device)
        for start in range(0, n, self.batch_size):
            stop = min(start + self.batch_size, n)
            rows = torch.arange(start, stop, device=volume.device)[:, None] + offsets
            x = inner[rows.clamp_(0, n - 1)].float()
            yield Slab(start, predictor(x), box, frame)


class SlidingWindowInferer(_VolumeInferer):
    """A 3D network over overlapping `patch_size` (Z, H, W) patches, Gaussian-blended."""

    def __init__(
        self,
        patch_size: tuple[int, int, int],
        batch_size: int = 2,
        overlap: float = 0.5,
        sigma_scale: float = 0.125,
    ):
        self.patch_size = tuple(int(p) for p in patch_size)
        self.batch_size = max(1, int(batch_size))
        self.overlap = float(overlap)
        self.sigma_scale = float(sigma_scale)

    def slabs(self, volume: Any, predictor: Predictor) -> Iterator[Slab]:
        volume = as_volume(volume)
        with torch.inference_mode():
            scores = self._blend(volume, predictor)
        frame = (int(volume.shape[-2]), int(volume.shape[-1]))
        yield Slab(0, scores.transpose(0, 1), None, frame)

    def _blend(self, volume: torch.Tensor, predictor: Predictor) -> torch.Tensor:
        """(K, Z, H, W) float32 scores: nnU-Net's tiles (step 1 − overlap of the patch) and
        Gaussian weights (sigma `sigma_scale` of the patch), summed in float32. (MONAI's
        `sliding_window_inference` did this before; importing MONAI took 1.5 s of a 3D
        predict's start-up.)"""
        from amoseg.ops.sliding import sliding_window_logits

        # (Z, H, W), or (C, Z, H, W) for several input channels (a cascade's image + labels)
        data = volume.float() if volume.ndim == 4 else volume.float()[None]
        return sliding_window_logits(
            [predictor], data, NUM_CLASSES, self.patch_size, 1.0 - self.overlap, None,
            self.batch_size, accumulate=torch.float32, sigma_scale=self.sigma_scale,
        )  # fmt: skip


def label_volume(inferer: Inferer, volume: Any, predictor: Predictor) -> torch.Tensor:
    """(Z, H, W) → (Z, H, W) uint8 labels on the model grid, on the predictor's device."""
    parts = [slab.labels() for slab in inferer.slabs(volume, predictor)]
    return torch.cat(parts)


def model_volume_labels(model: Any, inferer: Inferer, volume: torch.Tensor) -> torch.Tensor:
    """A model's (Z, H, W) uint8 labels for one whole volume through `inferer`; a model
    that z-scores per image gets the volume's own [mean, std] (`image_stats`)."""
    image = volume[0] if volume.ndim == 4 else volume  # (C, Z, H, W): channel 0 is the image
    stats = image_stats(image) if model.needs_stats else None
    return label_volume(inferer, volume, model.predictor(stats))


def model_labels(model: Any, volume: Any, batch_size: int = 8) -> np.ndarray:
    """A model's (Z, H, W) uint8 labels for one stored volume: its `predictor()` through its
    `inferer()` on its device, as validation and `evaluate` run it."""
    device = getattr(model, "device", "cpu")
    volume = as_volume(volume, device)
    return model_volume_labels(model, model.inferer(batch_size), volume).cpu().numpy()


def channel_argmax(scores: torch.Tensor) -> torch.Tensor:
    """arg-max over classes (axis 1) as uint8, the fast way for the layout: on a
    channels-last tensor it reduces a contiguous last axis; for an NCHW float32 tensor on
    the CPU (ONNX Runtime's output) NumPy's argmax is ~3× faster than torch's."""
    nchw = not scores.is_contiguous(memory_format=torch.channels_last)
    if scores.device.type == "cpu" and nchw and scores.dtype == torch.float32 and scores.ndim == 4:
        return torch.from_numpy(np.argmax(scores.numpy(), axis=1).astype(np.uint8))
    return scores.movedim(1, -1).argmax(-1).to(torch.uint8)
