"""One scan through a backend: file order → model grid → inferer → the scan's own grid.

Mirrors `prepare` exactly on the way in (reorient to RAS+, the same `amoseg.preprocessing`
resize of each axial slice to S×S, rounded as the int16 store does), runs the backend's inferer
(`amoseg.ops.inferers`), and on the way back resamples per-class scores (not labels)
to the scan's grid before the arg-max, so organ borders come out smooth at the scan's
resolution instead of blocky at the model's. All of it runs on the backend's device, so on
a GPU only the uint8 label volume (or the probabilities asked for) crosses back.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from amoseg.inference.backends import ScoreBackend
from amoseg.ops.inferers import Inferer, Predictor, Slab, channel_argmax
from amoseg.preprocessing.normalise import image_stats
from amoseg.preprocessing.orient import (  # noqa: F401 - re-exported for older callers
    apply_orientation_tensor,
    as_tensor,
    from_canonical_tensor,
    to_canonical_tensor,
)
from amoseg.preprocessing.resample import resize_inplane, round_int16

__all__ = ["StageTimes", "channel_argmax", "scan_probabilities", "segment_volume"]


class StageTimes:
    """Wall-clock seconds per pipeline stage (GPU work is synchronised at stage edges).

    `on_stage(name, n)` is told each time a stage is entered and at each `tick` (n: ticks
    so far; "forward" ticks at each network call: slice batches, or a sliding window's patch
    batches), so a progress line can say what runs now."""

    def __init__(
        self,
        device: torch.device | None = None,
        on_stage: Callable[[str, int], None] | None = None,
    ):
        self.seconds: dict[str, float] = defaultdict(float)
        self.entries: dict[str, int] = defaultdict(int)
        self.on_stage = on_stage
        self._sync = device is not None and device.type == "cuda"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.on_stage is not None:
            self.on_stage(name, self.entries[name])
        if self._sync:
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - start

    def tick(self, name: str) -> None:
        """One more step of `name`, told to `on_stage`."""
        self.entries[name] += 1
        if self.on_stage is not None:
            self.on_stage(name, self.entries[name])

    @property
    def total(self) -> float:
        return float(sum(self.seconds.values()))


def resize_slices(volume: torch.Tensor, size: int) -> torch.Tensor:
    """(X, Y, Z) canonical volume (any dtype) → (Z, size, size) float32, as `prepare` stores it
    (the `seed` configuration of `amoseg.preprocessing`: integer sources rounded as the int16
    store does, float sources kept as float32)."""
    slices = volume.permute(2, 0, 1).contiguous()
    out = resize_inplane(slices, (size, size), label=False)
    return out if torch.is_floating_point(volume) else round_int16(out)


def scan_grid_scores(slab: Slab, shape_xy: tuple[int, int]) -> torch.Tensor:
    """A slab's (n, K, h, w) model-grid scores → (n, K, X, Y) float32 on the scan's in-plane
    grid: bilinear when the scan is finer than the model (outside the body box: the box's
    edge scores, replicated), else nearest neighbour."""
    size = max(slab.frame)
    if size < max(shape_xy):
        scores = slab.scores.float()
        if slab.box is not None:
            rows, cols = slab.box
            pad = (cols.start, slab.frame[1] - cols.stop, rows.start, slab.frame[0] - rows.stop)
            scores = F.pad(scores, pad, mode="replicate")
        return F.interpolate(scores, size=shape_xy, mode="bilinear", align_corners=False)
    return F.interpolate(slab.framed().float(), size=shape_xy, mode="nearest-exact")


def scan_grid_labels(slab: Slab, shape_xy: tuple[int, int]) -> torch.Tensor:
    """(n, X, Y) uint8 = the arg-max of `scan_grid_scores(slab, shape_xy)`, computed the
    cheap way where that is exact: when the model grid is at least as fine as the scan's,
    nearest-neighbour resizing commutes with the arg-max, so labels are picked at the model
    grid and resized (no 16-channel resize, the costliest step on a CPU; on AMOS labels the
    bilinear path keeps organ Dice 0.987 for 512→256→512 where nearest labels give 0.952,
    while 512→640→512 loses nothing either way)."""
    if max(slab.frame) < max(shape_xy):
        return channel_argmax(scan_grid_scores(slab, shape_xy))
    labels = slab.labels()
    if labels.shape[-2:] != tuple(shape_xy):
        labels = F.interpolate(labels[:, None], size=shape_xy, mode="nearest-exact")[:, 0]
    return labels


def model_grid_volume(
    backend: ScoreBackend, data: np.ndarray, affine: np.ndarray
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """(X, Y, Z) raw voxels in file order → ((Z, S, S) model-grid volume on the backend's
    device, canonical shape (X, Y, Z)). The raw array (int16 for most CT: half the bytes of
    float32) goes to the device once."""
    volume = to_canonical_tensor(as_tensor(data).to(backend.device), affine)
    shape = (int(volume.shape[0]), int(volume.shape[1]), int(volume.shape[2]))
    return resize_slices(volume, backend.input_size), shape


def volume_predictor(backend: ScoreBackend, volume: torch.Tensor) -> Predictor:
    """The backend's scores for this whole model-grid volume: a per-image z-score gets the
    volume's own [mean, std], computed once (never a slab's or a tile's)."""
    return backend.predictor(image_stats(volume) if backend.needs_stats else None)


def timed_slabs(
    inferer: Inferer, volume: torch.Tensor, predictor: Predictor, times: StageTimes
) -> Iterator[Slab]:
    """The inferer's slabs, the time spent producing them counted as 'forward'; each network
    call is a `tick` (a 3D sliding window makes many within one slab)."""

    def counted(x: torch.Tensor) -> torch.Tensor:
        times.tick("forward")
        return predictor(x)

    slabs = inferer.slabs(volume, counted if times.on_stage is not None else predictor)
    while True:
        with times.stage("forward"):
            slab = next(slabs, None)
        if slab is None:
            return
        yield slab


def planned_scores(
    backend: ScoreBackend, data: np.ndarray, affine: np.ndarray, batch_size: int, times: StageTimes
) -> tuple[torch.Tensor, Any, Any]:
    """For a run of a planned configuration (`backend.preprocessor`): the plan's Preprocessor
    on the device (orient → crop → resample), the inferer over the whole preprocessed
    volume → ((K, Z', X', Y') scores, the preprocessor, its record for the exact inverse)."""
    pre = backend.preprocessor  # type: ignore[attr-defined]
    with times.stage("preprocess"):
        out = pre.forward(as_tensor(data).to(backend.device), affine)
    slabs = timed_slabs(
        backend.inferer(batch_size), out.image, volume_predictor(backend, out.image), times
    )
    scores = torch.cat([slab.framed().to(backend.device) for slab in slabs])
    return scores.transpose(0, 1), pre, out.record


def segment_volume(
    backend: ScoreBackend,
    data: np.ndarray,
    affine: np.ndarray,
    batch_size: int = 8,
    times: StageTimes | None = None,
) -> np.ndarray:
    """(X, Y, Z) raw intensities in file order → uint8 AMOS ids of the same shape and order.

    Seed runs (S×S slices): slab by slab, so only one batch of class scores is alive at a
    time; for a backend with a `body_threshold` (CT-windowed U-Nets) the inferer scores only
    the body's box. Planned runs: the plan's Preprocessor and its exact inverse
    (`Preprocessor.invert_labels`: scores resampled before the arg-max).
    """
    times = times if times is not None else StageTimes(backend.device)
    if hasattr(backend, "scan_labels"):  # issue 26: nnU-Net folders run their own pipeline
        with times.stage("forward"):
            return backend.scan_labels(data, affine)  # type: ignore[attr-defined]
    if getattr(backend, "preprocessor", None) is not None:
        scores, pre, record = planned_scores(backend, data, affine, batch_size, times)
        with times.stage("resize_back"):
            return pre.invert_labels(scores, record).cpu().numpy()
    with times.stage("preprocess"):
        slices, (nx, ny, nz) = model_grid_volume(backend, data, affine)
        out = torch.empty((nz, nx, ny), dtype=torch.uint8, device=backend.device)
    predictor = volume_predictor(backend, slices)
    for slab in timed_slabs(backend.inferer(batch_size), slices, predictor, times):
        with times.stage("resize_back"):
            slab.scores = slab.scores.to(backend.device)
            out[slab.start : slab.stop] = scan_grid_labels(slab, (nx, ny))
    with times.stage("resize_back"):
        labels = from_canonical_tensor(out.permute(1, 2, 0), affine).contiguous().cpu().numpy()
    return labels


def scan_probabilities(
    backends: Sequence[ScoreBackend],
    data: np.ndarray,
    affine: np.ndarray,
    batch_size: int = 8,
    times: StageTimes | None = None,
) -> torch.Tensor:
    """(X, Y, Z) raw intensities in file order → (16, X, Y, Z) float32 class probabilities
    on the scan's grid (file order), on the first backend's device, averaged over
    `backends` (softmax of each one's logits, then the mean). The arg-max over classes is
    what `segment_volume` returns for one backend (up to ties)."""
    if not backends:
        raise ValueError("scan_probabilities needs at least one backend")
    device = backends[0].device
    times = times if times is not None else StageTimes(device)
    total: torch.Tensor | None = None
    planned: torch.Tensor | None = None  # (K, X, Y, Z) file order, summed
    for backend in backends:
        if hasattr(backend, "scan_probabilities"):  # issue 26: nnU-Net model folders
            with times.stage("forward"):
                probs = backend.scan_probabilities(data, affine).to(device)  # type: ignore[attr-defined]
            planned = probs if planned is None else planned.add_(probs)
            continue
        if getattr(backend, "preprocessor", None) is not None:
            scores, pre, record = planned_scores(backend, data, affine, batch_size, times)
            with times.stage("resize_back"):
                probs = pre.invert(scores.float().softmax(0), record).to(device)
                planned = probs if planned is None else planned.add_(probs)
            continue
        with times.stage("preprocess"):
            slices, (nx, ny, nz) = model_grid_volume(backend, data, affine)
            if total is None:
                total = torch.zeros((nz, 16, nx, ny), dtype=torch.float32, device=device)
        predictor = volume_predictor(backend, slices)
        for slab in timed_slabs(backend.inferer(batch_size), slices, predictor, times):
            with times.stage("resize_back"):
                slab.scores = slab.scores.to(device)
                total[slab.start : slab.stop] += scan_grid_scores(slab, (nx, ny)).softmax(1)
    with times.stage("resize_back"):
        summed = planned
        if total is not None:
            seed = from_canonical_tensor(total.permute(1, 2, 3, 0), affine)
            summed = seed if summed is None else summed.add_(seed)
        assert summed is not None
        return summed.div_(len(backends)).contiguous()
