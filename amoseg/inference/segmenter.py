"""The one segmenter behind `predict`, `amoseg.load(...).segment(...)`, `evaluate` and `cv`.

    preprocess → inferer → invert → (average over bundles: ensembles) → post-process

A cascade bundle (`3d_cascade_fullres`) is one backend that runs its two stages in turn
(`amoseg.inference.cascade.CascadeBackend`), so everything below treats it as one model.

`Segmenter.open(paths, SegmentOptions(...))` reads every bundle the paths name (runs, folders
of fold runs, packages), opens one scoring backend per bundle and settles every default once,
from the bundles, so the CLI, the API and evaluate cannot disagree:

- test-time mirroring (`tta`): off unless asked, except on CUDA where it is on; either way a
  bundle is mirrored only along the axes its recipe trained invariant to (none for the 2D
  recipes, which never flip: mirroring them would average in left/right-swapped organs);
- post-processing `auto`: the clean-up `amoseg cv` saved with the bundles (their common
  choice), or none when any bundle has no saved choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from amoseg.errors import AmosegError
from amoseg.inference.backends import PRECISIONS, resolve_device
from amoseg.inference.bundle import ModelBundle, NnunetBundle, read_bundles
from amoseg.inference.cascade import CascadeBackend
from amoseg.inference.pipeline import StageTimes
from amoseg.ops.tta import MirroredBackend

POSTPROCESS_CHOICES = ("auto", "none", "lcc")
BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class SegmentOptions:
    """How to run the bundles; every field's default is the CLI's and the API's."""

    device: str = "auto"
    precision: str = "auto"  # auto (bf16 where trained so and native), fp32, bf16
    crop: bool = True  # score only the body's box where the recipe trained on such crops
    tta: bool | None = None  # None: on for CUDA, off on CPU (only along trained axes)
    postprocess: str | Sequence[int] = "auto"  # auto, none, lcc, or organ ids
    batch_size: int | None = None  # slices (2D) per forward pass; None: 8 CPU, 32 GPU
    backend: Literal["torch", "onnx"] = "torch"
    onnx_path: Path | None = None  # with backend onnx: this file instead of RUN/model.onnx
    step_size: float = 0.5  # sliding-window step (share of a tile) of nnU-Net model folders
    #: an nnU-Net 3d_cascade_fullres folder's 3d_lowres folder, kept elsewhere than beside it
    previous_stage: Path | None = None

    def check(self) -> None:
        """One line for a bad value, before any model is loaded."""
        if self.precision not in PRECISIONS:
            raise AmosegError(
                f"unknown precision {self.precision!r}", None, "use auto, fp32 or bf16"
            )
        if self.backend not in BACKENDS:
            raise AmosegError(f"unknown backend {self.backend!r}", None, "use torch or onnx")
        if self.backend == "onnx" and self.precision == "bf16":
            raise AmosegError("--precision bf16 needs --backend torch", None, "use auto or fp32")
        if isinstance(self.postprocess, str) and self.postprocess not in POSTPROCESS_CHOICES:
            raise AmosegError(
                f"unknown postprocess {self.postprocess!r}", None, "use auto, none or lcc"
            )
        if not 0 < self.step_size <= 1:
            raise AmosegError(f"step size must be in (0, 1], got {self.step_size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise AmosegError(f"batch size must be at least 1, got {self.batch_size}")
        resolve_device(self.device)


def onnx_backend(bundle: ModelBundle, options: SegmentOptions) -> Any:
    """ONNX Runtime on the bundle's export (RUN/model.onnx, re-exported when stale, or
    `options.onnx_path`), with the bundle's preprocessing."""
    from amoseg.inference.backends import OnnxBackend
    from amoseg.inference.export import run_onnx_path

    if bundle.previous_stage is not None:
        raise AmosegError(
            "--backend onnx runs one network; a cascade stage runs its two stages in torch",
            bundle.source,
            "drop --backend onnx",
        )
    if options.onnx_path is None and bundle.member is not None:
        raise AmosegError(
            "--backend onnx with a model package needs --onnx FILE",
            bundle.source,
            f"amoseg export {bundle.source} --onnx model.onnx, then pass --onnx model.onnx",
        )
    path = options.onnx_path or run_onnx_path(bundle)
    backend = OnnxBackend(path, device=options.device)
    if not options.crop:
        backend.body_threshold = None
    return backend


class Segmenter:
    """Bundles opened once, ready to segment many scans with the same settled defaults."""

    def __init__(self, bundles: Sequence[ModelBundle], options: SegmentOptions | None = None):
        options = options or SegmentOptions()
        options.check()
        if not bundles:
            raise AmosegError("no model to segment with", None, "pass at least one run")
        self.bundles = list(bundles)
        self.options = options
        if options.previous_stage is not None:
            folders = [b for b in self.bundles if isinstance(b, NnunetBundle) and not b.packed]
            if len(folders) != 1:
                raise AmosegError(
                    "--previous-stage names the 3d_lowres folder of one nnU-Net "
                    "3d_cascade_fullres model folder",
                    options.previous_stage,
                    "amoseg's runs and packages carry their first stage; drop it",
                )
        self.device = resolve_device(options.device)
        self.mirror = self.device.type == "cuda" if options.tta is None else options.tta
        if options.backend == "onnx":
            if len(self.bundles) != 1:
                raise AmosegError(
                    "--backend onnx predicts with one model", self.bundles[1].source, "pass one"
                )
            backends = [onnx_backend(self.bundles[0], options)]
        else:
            backends = [b.open_backend(options, self.mirror) for b in self.bundles]
        self.backends = [
            MirroredBackend(backend, bundle.mirror_axes)
            if self.mirror and bundle.mirror_axes and not isinstance(backend, CascadeBackend)
            else backend  # a cascade mirrors each of its stages itself
            for backend, bundle in zip(backends, self.bundles, strict=True)
        ]
        #: per bundle: mirrored at test time (by the segmenter, or by nnU-Net's own window)
        self.mirrored = [
            isinstance(b, MirroredBackend) or bool(getattr(b, "tta", False)) for b in self.backends
        ]
        self.postprocess = resolve_postprocess(options.postprocess, self.bundles)

    @classmethod
    def open(
        cls, paths: Sequence[str | Path] | str | Path, options: SegmentOptions | None = None
    ) -> Segmenter:
        """Every bundle `paths` name (run folders, folders of runs, packages)."""
        (options or SegmentOptions()).check()  # a bad option fails before any model loads
        items = [paths] if isinstance(paths, str | Path) else list(paths)
        return cls([b for p in items for b in read_bundles(p)], options)

    @property
    def synthetic(self) -> bool:
        """Whether any bundle was trained on amoseg's synthetic phantoms only."""
        return any(b.synthetic for b in self.bundles)

    @property
    def mirrored_bundles(self) -> int:
        return sum(self.mirrored)

    def labels(
        self, data: np.ndarray, affine: np.ndarray, times: StageTimes | None = None
    ) -> np.ndarray:
        """(X, Y, Z) voxels in file order → uint8 AMOS ids of the same shape and order."""
        from amoseg.inference.predict import segment_scan

        return segment_scan(
            self.backends, data, affine, batch_size=self.options.batch_size,
            postprocess=self.postprocess, times=times,
        )  # fmt: skip

    def probabilities(
        self, data: np.ndarray, affine: np.ndarray, times: StageTimes | None = None
    ) -> torch.Tensor:
        """(16, X, Y, Z) float32 class probabilities on the scan's grid (ensembles: mean)."""
        from amoseg.inference.predict import scan_probabilities

        return scan_probabilities(
            self.backends, data, affine, batch_size=self.options.batch_size, times=times
        )


def resolve_postprocess(
    choice: str | Sequence[int], bundles: Sequence[ModelBundle]
) -> str | list[int]:
    """`auto` → the organs every bundle's saved choice agrees on ("none" when a bundle has
    no saved choice); anything else as given."""
    if choice != "auto":
        return choice if isinstance(choice, str) else sorted({int(o) for o in choice})
    chosen: set[int] | None = None
    for bundle in bundles:
        organs = bundle.lcc_organs
        if organs is None:
            return "none"
        chosen = set(organs) if chosen is None else chosen & set(organs)
    return sorted(chosen) if chosen else "none"
