"""Multinomial logistic regression on a pixel (`logreg-pixel`) or its 3×3 / 5×5 neighbourhood.

A single k×k convolution with 16 outputs followed by softmax and trained with cross-entropy is
*exactly* multinomial logistic regression on the pixel's zero-padded k×k neighbourhood: one
weight vector and bias per class, shared by every position. Intensities are clipped to
[-1000, 1000] HU and divided by 1000 first — a fixed affine map that only conditions the
optimisation (the model family is unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from amoseg import hparams as hp
from amoseg.models.networks import PatchLogReg
from amoseg.models.registry import register_model
from amoseg.models.torch_model import TorchModel


class _LogReg(TorchModel):
    kernel: ClassVar[int] = 1
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {"lr": 1e-2, "weight_decay": 0.0, "batch_size": 8}

    @dataclass(frozen=True)
    class Params(hp.Params):
        norm: str = hp.choice("window", ("window",))  # the report's fixed HU window
        window: list[float] = hp.window([-1000.0, 1000.0])

    def build_core(self, in_channels: int) -> nn.Module:
        return PatchLogReg(in_channels, self.kernel)


@register_model
class LogRegPixel(_LogReg):
    name = "logreg-pixel"
    ladder = 1
    kernel = 1


@register_model
class LogReg3x3(_LogReg):
    name = "logreg-3x3"
    ladder = 2
    kernel = 3


@register_model
class LogReg5x5(_LogReg):
    name = "logreg-5x5"
    ladder = 3
    kernel = 5
