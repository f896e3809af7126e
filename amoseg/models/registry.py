"""Models by name: the report's ladder from the position prior to the modern U-Net."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from amoseg.errors import AmosegError
from amoseg.models.base import SegmentationModel

MODEL_NAMES = ("prior", "logreg-pixel", "logreg-3x3", "logreg-5x5", "mlp", "unet-seed", "unet")
DEFAULT_MODEL = "unet"


def model_class(name: str) -> type:
    """The class registered under `name` (imports lazily: torch only when needed)."""
    from amoseg.models.logreg import LogReg3x3, LogReg5x5, LogRegPixel
    from amoseg.models.mlp import DenseMLP
    from amoseg.models.prior import PositionPrior
    from amoseg.models.unet import UNetModern
    from amoseg.models.unet_seed import UNetSeed

    classes = {
        c.name: c
        for c in (PositionPrior, LogRegPixel, LogReg3x3, LogReg5x5, DenseMLP, UNetSeed, UNetModern)
    }
    if name not in classes:
        raise AmosegError(f"unknown model '{name}'", hint=f"choose one of {', '.join(MODEL_NAMES)}")
    return classes[name]


def create_model(name: str, **hparams: Any) -> SegmentationModel:
    """A fresh, untrained model; `input_size` (the store's S) may be passed among hparams."""
    return model_class(name)(**hparams)


def train_defaults(name: str) -> dict[str, Any]:
    """The recipe's own lr / weight_decay / batch_size (used where settings leave None)."""
    return dict(model_class(name).TRAIN_DEFAULTS)


def load_model(path: str | Path, device: str = "auto") -> SegmentationModel:
    """Rebuild whichever model a checkpoint file holds."""
    from amoseg.models.torch_model import load_checkpoint

    ckpt = load_checkpoint(Path(path))
    return model_class(ckpt["model"]).from_checkpoint(ckpt, device)
