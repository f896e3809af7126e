"""The one interface every model family implements, so train/evaluate/compare/tune are loops.

A model sees volumes from the prepared store at the store's size (S×S slices), in raw stored
units (HU for CT). Each model owns its own intensity normalisation, because the report's
models differ there (e.g. the seed U-Net divides by the maximum intensity).

A model does not run its own loops: the trainer (`amoseg.training.trainer`) drives its
hooks, and validation, `evaluate` and `predict` all run its `predictor()` through its
`inferer()` (`amoseg.ops.inferers`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from amoseg import hparams as hp
from amoseg.errors import AmosegError
from amoseg.labels import NUM_CLASSES
from amoseg.ops.inferers import Inferer, Predictor, SliceInferer


class SegmentationModel(ABC):
    """predict batches of slices; save/load a checkpoint; say how to infer over a volume."""

    name: ClassVar[str]
    #: place in the report's ladder (position prior 0 … modern U-Net), simplest first:
    #: the order of `model_names()`, the demo and the comparison table.
    ladder: ClassVar[int] = 99
    #: part of the report's ladder (the demo trains and compares these); False for recipes
    #: beside it, such as the 3D `unet3d`
    in_ladder: ClassVar[bool] = True
    #: Adjacent slices on each side fed as extra channels (0 = plain 2D, 1 = 2.5D with 3 ch).
    context: int = 0
    num_classes: int = NUM_CLASSES
    #: raw intensity above which a voxel is body, for models that score only the body's box
    #: (trained on such crops: see amoseg.preprocessing.crop); None scores whole slices.
    body_threshold: float | None = None
    #: the network's down-sampling factor: input sides must be multiples of it.
    size_multiple: int = 1
    #: False for models fitted in one pass over the training labels (the position prior):
    #: the trainer then calls `fit_statistics` instead of its gradient loop.
    gradient_trained: ClassVar[bool] = True
    #: the recipe's lr / weight_decay / batch_size (TrainSettings fields left at None).
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: the recipe's checked hyper-parameters (a frozen dataclass of `amoseg.hparams`
    #: fields): names, defaults and the rules `--hparams`, plan.json and tune obey
    Params: ClassVar[type[hp.Params]] = hp.NoParams
    #: spatial dimensions of the network's input: 2 (slices, 2.5D stacks) or 3 (patches).
    dims: ClassVar[int] = 2
    #: spatial input axes the recipe's augmentation mirrors (left–right with the paired
    #: organs swapped), so test-time mirroring may average over them; none for a recipe
    #: that never flips (mirroring it at test time averages in wrong-side organs).
    mirror_axes: ClassVar[tuple[int, ...]] = ()

    @property
    def input_channels(self) -> int:
        """Channels of the module's input: the slice and its `context` neighbours on each
        side (a cascade stage adds the previous stage's label map)."""
        return 1 + 2 * int(self.context)

    @classmethod
    def check_params(cls, hparams: dict[str, Any]) -> hp.Params:
        """`hparams` (renamed ones upgraded) checked against the recipe's `Params`."""
        return cls.Params.from_dict(cls.upgrade_hparams(hparams), cls.name)

    @classmethod
    def configured_params(cls, configuration: Any, where: Path | None = None) -> dict[str, Any]:
        """What a planned configuration decides for this recipe's parameters when the
        configuration's network is this recipe (`network.args`, and the 2.5D `context` for
        a recipe that has one); checked here, so a wrong plan fails before training."""
        if configuration is None or configuration.network.name != cls.name:
            return {}
        names = cls.Params.names()
        args = dict(configuration.network.args)
        if "depth" in args and "stages" in names and "depth" not in names:
            args["stages"] = int(args.pop("depth")) + 1  # plan.json counts down-samplings
        if "context" in names:
            args["context"] = configuration.context
        unknown = sorted(set(args) - set(names))
        if unknown:
            raise AmosegError(
                f"plan configuration '{configuration.name}' gives {cls.name} unknown "
                f"network.args {', '.join(unknown)}",
                where,
                f"{cls.name} accepts {', '.join(sorted(names))}; prepare with a fixed plan",
            )
        cls.Params.from_dict(args, cls.name)
        return args

    @classmethod
    def build(
        cls, configuration: Any = None, input_size: int | None = None, **hparams: Any
    ) -> SegmentationModel:
        """A fresh model for `configuration` (None: the recipe's defaults): the planned
        parameters, then `hparams` over them."""
        return cls(input_size=input_size, **{**cls.configured_params(configuration), **hparams})

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Hyper-parameters under their current names (older runs and scripts may use a
        renamed one); the default has none to rename."""
        return dict(hparams)

    @classmethod
    def trained_mirror_axes(cls, hparams: dict[str, Any]) -> tuple[int, ...]:
        """The axes a model with these hyper-parameters was trained invariant to."""
        return cls.mirror_axes

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

    @classmethod
    def store_hparams(cls, store: Any, hparams: dict[str, Any]) -> dict[str, Any]:
        """Hyper-parameters derived from the training store (class weights, window)."""
        return {}

    def train_dataset(self, store: Any, seed: int, split: str = "train") -> Any:
        """The recipe's own training samples (e.g. 3D patches of its size; `split` "val":
        the same kind from the validation cases), or None for the trainer's default: a seed
        store's slices, a planned store's patches."""
        return None

    def fit_statistics(self, store: Any) -> float:
        """One pass over the store's training split (models with `gradient_trained` False);
        returns the training loss."""
        raise NotImplementedError(f"model '{self.name}' is trained by gradient descent")

    #: whether inputs need their whole image's [mean, std] (a per-image z-score)
    needs_stats: bool = False
    #: trained in bf16 autocast (the modern recipes), so prediction may run in bf16 too
    fast_gpu: ClassVar[bool] = False
    #: this instance computes in bf16 now (torch recipes decide by device and precision)
    use_bf16: bool = False

    def export_module(self) -> torch.nn.Module:
        """raw float32 inputs → logits, normaliser inside, fp32 on the CPU: what TorchBackend
        runs and ONNX exports. Models without a network raise NotImplementedError (they
        predict through `predict_batch`)."""
        raise NotImplementedError(f"model '{self.name}' has no torch network")

    def predictor(self, stats: Any = None) -> Predictor:
        """(B, C, S, S) raw inputs → (B, K, S, S) scores; by default the log of
        `predict_batch`'s probabilities (models with a network return its logits).
        `stats`: the whole image's [mean, std], for models that z-score per image."""

        def predict(x: torch.Tensor) -> torch.Tensor:
            _labels, probs = self.predict_batch(x.detach().cpu().numpy().astype(np.float32))
            scores = torch.from_numpy(np.asarray(probs, dtype=np.float32)).clamp_min_(1e-12)
            return scores.log_().to(x.device)

        return predict

    def inferer(self, batch_size: int = 8) -> Inferer:
        """How the predictor runs over a volume: slices with `context` neighbours, on the
        body's box where the model was trained on such crops."""
        return SliceInferer(self.context, batch_size, self.body_threshold, self.size_multiple)
