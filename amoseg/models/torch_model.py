"""What every gradient-trained model shares: hyper-parameters, a `SegNet`, its predictor,
checkpoint save/load. Subclasses only say what differs — network, normaliser, loss,
augmentation, optimiser, LR schedule — as hooks the trainer (`amoseg.training.trainer`)
calls, so the report's ladder stays one training loop and a model imports no trainer."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amoseg.devices import resolve_device
from amoseg.errors import AmosegError
from amoseg.models.base import SegmentationModel
from amoseg.models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from amoseg.models.networks import SegNet, count_parameters, make_norm
from amoseg.ops.inferers import Predictor
from amoseg.ops.weights import build_loaded, shapes_only
from amoseg.preprocessing.crop import crop_batch

#: models built inside `inference_build()` are for prediction only (`inference_only`)
_INFERENCE_BUILD: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "amoseg_inference_build", default=False
)


@contextlib.contextmanager
def inference_build() -> Iterator[None]:
    """Models built here are for prediction only: a recipe may build a lighter network with
    the same weights (unet3d: without importing MONAI, `amoseg.models.resunet`)."""
    token = _INFERENCE_BUILD.set(True)
    try:
        yield
    finally:
        _INFERENCE_BUILD.reset(token)


class TorchModel(SegmentationModel):
    """A `SegNet` (normaliser + core) plus the recipe that trains it."""

    #: training defaults for this recipe (TrainSettings fields left at None take these).
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 8}
    optimizer_name: ClassVar[str] = "adam"
    #: bf16 autocast + channels_last on GPU (the modern recipe); the report's ran in fp32.
    fast_gpu: ClassVar[bool] = False
    #: the layout of inputs and weights on GPU with `fast_gpu` (channels_last_3d for 3D nets)
    memory_format: ClassVar[torch.memory_format] = torch.channels_last

    def __init__(self, input_size: int | None = None, **hparams: Any):
        #: built by `inference_build()`: predicts, exports, never trains
        self.inference_only = _INFERENCE_BUILD.get()
        self.params: Any = self.check_params(hparams)
        self.input_size = int(input_size) if input_size else 0
        self.context = int(getattr(self.params, "context", 0))
        self.device = torch.device("cpu")
        self.net = self.make_net()

    @property
    def hparams(self) -> dict[str, Any]:
        """The parameters as plain JSON values (config.json, checkpoints); a copy."""
        return self.params.to_dict()

    def make_net(self) -> SegNet:
        """A fresh network for these parameters (random initial weights)."""
        return SegNet(self.build_norm(), self.build_core(1 + 2 * self.context))

    # ---- recipe hooks -------------------------------------------------------------------
    def build_core(self, in_channels: int) -> nn.Module:
        raise NotImplementedError

    def build_norm(self) -> nn.Module:
        return make_norm(self.params.norm, getattr(self.params, "window", None) or (-1e3, 1e3))

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), target)

    def crop_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A raw training batch cut to its body box when this model predicts on such boxes."""
        if self.body_threshold is None:
            return x, y
        return crop_batch(x, y, self.body_threshold, self.size_multiple)

    def augment(
        self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch augmentation on normalised inputs, on the training device."""
        return x, y

    def lr_lambda(self, total_steps: int) -> Callable[[int], float]:
        """Multiplier on the base LR at each optimiser step (constant unless overridden)."""
        return _constant

    def make_optimizer(self, lr: float, weight_decay: float) -> torch.optim.Optimizer:
        cls = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        fused = {"fused": True} if self.device.type == "cuda" else {}  # one kernel per step
        return cls(self.net.parameters(), lr=lr, weight_decay=weight_decay, **fused)

    # ---- inference ------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return count_parameters(self.net)

    def to(self, device: str | torch.device) -> TorchModel:
        self.device = resolve_device(device)
        self.net.to(self.device)
        if self.use_fast_gpu:
            self.net.to(memory_format=self.memory_format)
        return self

    @property
    def use_fast_gpu(self) -> bool:
        return self.fast_gpu and self.device.type == "cuda"

    #: bf16 autocast (+ channels_last) chosen by `set_precision`; None: the recipe's GPU rule
    bf16: bool | None = None

    @property
    def use_bf16(self) -> bool:
        return self.use_fast_gpu if self.bf16 is None else self.bf16

    def set_precision(self, precision: str) -> str:
        """Training steps in bf16 autocast + channels_last, or fp32 (`train --precision`):
        'auto' is bf16 for the recipes that train in bf16 on GPU (`fast_gpu`) on a device that
        computes bf16 natively (GPU, or a CPU with AMX / AVX512-BF16); returns the choice.
        Prediction keeps `autocast` (fp32 on CPU; the predict backends choose their own)."""
        self.bf16 = trains_bf16(precision, self.device, self.fast_gpu)
        if self.bf16:
            self.net.to(memory_format=self.memory_format)
        return "bf16" if self.bf16 else "fp32"

    def autocast(self) -> Any:
        """Prediction's autocast: bf16 on GPU for the modern recipe (in-process validation
        then scores what a reloaded checkpoint predicts)."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_fast_gpu)

    def train_autocast(self) -> Any:
        """Training steps' autocast: bf16 on any device where `set_precision` chose it."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    @property
    def needs_stats(self) -> bool:
        """Whether inputs need their whole image's [mean, std] (a per-image z-score)."""
        return self.net.needs_stats

    def _logits(self, x: Any, stats: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            t = x.to(self.device, non_blocking=True).float()
        else:
            t = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(self.device)
        if self.use_fast_gpu:
            t = t.contiguous(memory_format=self.memory_format)
        with self.autocast():
            return self.net(t, stats).float()

    @torch.no_grad()
    def _predict(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        self.net.eval()
        return self._logits(x, stats)

    def predictor(self, stats: torch.Tensor | None = None) -> Predictor:
        """The network in eval mode on its device (bf16 autocast for the modern recipe on
        GPU): raw (B, 1+2c, S, S) → logits (B, 16, S, S). `stats`: the whole image's
        [mean, std] (`image_stats`), for recipes that z-score per image."""
        if stats is None:
            return self._predict
        return lambda x: self._predict(x, stats)

    def predict_batch(
        self, x: np.ndarray, stats: torch.Tensor | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        probs = self._predict(x, stats).softmax(dim=1)
        labels = probs.argmax(dim=1).to(torch.uint8)
        return labels.cpu().numpy(), probs.cpu().numpy()

    def export_module(self) -> nn.Module:
        """raw float32 (B, 1+2c, S, S) → logits (B, 16, S, S), normaliser inside; fp32, CPU."""
        state = {k: v.detach().float().cpu().clone() for k, v in self.net.state_dict().items()}
        return build_loaded(self.make_net, state).eval()

    # ---- persistence ----------------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.name,
            "hparams": self.hparams,
            "input_size": self.input_size,
            "state": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
        }

    def save(self, path: Path) -> None:
        save_checkpoint(self.checkpoint_payload(), path)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], device: str = "auto") -> TorchModel:
        # no initial weights: the checkpoint's replace them
        model = shapes_only(lambda: cls(input_size=ckpt.get("input_size"), **ckpt["hparams"]))
        # copies: the checkpoint (a bundle's, read again for its next model) stays as it was
        model.net = build_loaded(model.make_net, {k: v.clone() for k, v in ckpt["state"].items()})
        return model.to(device)

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> TorchModel:
        return cls.from_checkpoint(load_checkpoint(Path(path)), device)


def trains_bf16(precision: str, device: torch.device, recipe_bf16: bool) -> bool:
    """`train --precision` resolved: 'auto' is bf16 for a bf16 recipe on a device with native
    bf16 (where it is emulated it is slower than fp32); 'bf16' / 'fp32' as said."""
    from amoseg.devices import native_bf16

    if precision not in ("auto", "bf16", "fp32"):
        raise AmosegError(f"unknown precision {precision!r}", hint="use auto, bf16 or fp32")
    if precision == "auto":
        return recipe_bf16 and native_bf16(device)
    return precision == "bf16"


def _constant(step: int) -> float:
    return 1.0


def warmup_cosine(total_steps: int, warmup: float = 0.05, floor: float = 0.01) -> Callable:
    """Linear warm-up over `warmup` of the steps, then cosine decay to `floor`×base LR."""
    warm = max(1, round(total_steps * warmup))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor
