"""What every gradient-trained model shares: hyper-parameters, a `SegNet`, batched inference,
checkpoint save/load. Subclasses only say what differs — network, normaliser, loss,
augmentation, optimiser, LR schedule — so the report's ladder stays one training loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amoseg.data.crop import crop_batch, predict_in_box
from amoseg.errors import AmosegError
from amoseg.models.base import SegmentationModel
from amoseg.models.networks import SegNet, count_parameters, make_norm

CHECKPOINT_FORMAT = "amoseg-checkpoint"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → cuda if present; an explicit 'cuda' without a GPU is a user error."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AmosegError(
            "CUDA was requested but no GPU is available", hint="use --device cpu or auto"
        )
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise AmosegError(f"unknown device '{name}'", hint="use auto, cpu or cuda") from exc


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read an amoseg checkpoint safely (weights_only: tensors and plain Python only)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise AmosegError("checkpoint not found", path) from exc
    except Exception as exc:  # truncated / foreign pickle: one clear line
        raise AmosegError(
            f"checkpoint is unreadable ({type(exc).__name__})", path, "re-run training"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise AmosegError("not an amoseg checkpoint", path, "pass a run folder written by train")
    return ckpt


class TorchModel(SegmentationModel):
    """A `SegNet` (normaliser + core) plus the recipe that trains it."""

    #: training defaults for this recipe (TrainSettings fields left at None take these).
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 8}
    #: model hyper-parameters and their defaults; create_model rejects any other key.
    HPARAMS: ClassVar[dict[str, Any]] = {}
    optimizer_name: ClassVar[str] = "adam"
    #: bf16 autocast + channels_last on GPU (the modern recipe); the report's ran in fp32.
    fast_gpu: ClassVar[bool] = False

    def __init__(self, input_size: int | None = None, **hparams: Any):
        unknown = sorted(set(hparams) - set(self.HPARAMS))
        if unknown:
            raise AmosegError(
                f"unknown hyper-parameter(s) {', '.join(unknown)} for model '{self.name}'",
                hint=f"accepted: {', '.join(sorted(self.HPARAMS)) or 'none'}",
            )
        self.hparams: dict[str, Any] = {**self.HPARAMS, **hparams}
        self.input_size = int(input_size) if input_size else 0
        self.context = int(self.hparams.get("context", 0))
        self.device = torch.device("cpu")
        self.net = SegNet(self.build_norm(), self.build_core(1 + 2 * self.context))

    # ---- recipe hooks -------------------------------------------------------------------
    def build_core(self, in_channels: int) -> nn.Module:
        raise NotImplementedError

    def build_norm(self) -> nn.Module:
        return make_norm(
            self.hparams.get("norm", "window"), self.hparams.get("window", (-1e3, 1e3))
        )

    @classmethod
    def store_hparams(cls, store: Any, hparams: dict[str, Any]) -> dict[str, Any]:
        """Hyper-parameters derived from the training store (class weights, window)."""
        return {}

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
            self.net.to(memory_format=torch.channels_last)
        return self

    @property
    def use_fast_gpu(self) -> bool:
        return self.fast_gpu and self.device.type == "cuda"

    def autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_fast_gpu)

    def _logits(self, x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            t = x.to(self.device, non_blocking=True).float()
        else:
            t = torch.from_numpy(np.asarray(x, dtype=np.float32)).to(self.device)
        if self.use_fast_gpu:
            t = t.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return self.net(t).float()

    @torch.no_grad()
    def predict_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.net.eval()
        probs = self._logits(x).softmax(dim=1)
        labels = probs.argmax(dim=1).to(torch.uint8)
        return labels.cpu().numpy(), probs.cpu().numpy()

    @torch.no_grad()
    def predict_labels(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """(B, 1+2c, S, S) → (B, S, S) uint8 labels on the model's device (no host sync)."""
        self.net.eval()
        return self._logits(x).argmax(dim=1).to(torch.uint8)

    def predict_volume(self, slices: np.ndarray, batch_size: int = 8) -> np.ndarray:
        out = torch.empty(slices.shape, dtype=torch.uint8, device=self.device)
        box = self.volume_box(slices)
        for start in range(0, slices.shape[0], batch_size):
            stop = min(start + batch_size, slices.shape[0])
            x = self.context_stack(slices, start, stop)
            out[start:stop] = predict_in_box(self.predict_labels, x, box)
        return out.cpu().numpy()

    def export_module(self) -> nn.Module:
        """raw float32 (B, 1+2c, S, S) → logits (B, 16, S, S), normaliser inside; fp32, CPU."""
        net = SegNet(self.build_norm(), self.build_core(1 + 2 * self.context))
        net.load_state_dict({k: v.float().cpu() for k, v in self.net.state_dict().items()})
        return net.eval()

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
        from amoseg.atomic import atomic_path

        with atomic_path(path) as tmp:
            torch.save(self.checkpoint_payload(), tmp)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], device: str = "auto") -> TorchModel:
        model = cls(input_size=ckpt.get("input_size"), **ckpt["hparams"])
        model.net.load_state_dict(ckpt["state"])
        return model.to(device)

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> TorchModel:
        return cls.from_checkpoint(load_checkpoint(Path(path)), device)

    def fit(self, store: Any, settings: Any, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
        from amoseg.training.trainer import fit_torch

        return fit_torch(self, store, settings, Path(run_dir), **kwargs)


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
