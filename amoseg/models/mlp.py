"""`mlp`: the report's fully connected net — dense layers only, no convolution.

Each slice is resized to work_size×work_size (220 by default, as in the report: 48,400
inputs), passed through the hidden layer(s), and the work_size²×16 output logits (softmax per
pixel) are resized back to the store size, so predictions are evaluated at full resolution.
Training computes the loss on those resized logits. The parameter count is dominated by the
last layer (hidden × 774,400 at 220²) and is printed at the start of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from amoseg import hparams as hp
from amoseg.models.networks import DenseSegNet
from amoseg.models.registry import register_model
from amoseg.models.torch_model import TorchModel


@register_model
class DenseMLP(TorchModel):
    name = "mlp"
    ladder = 4
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 8}

    @dataclass(frozen=True)
    class Params(hp.Params):
        work_size: int = hp.number(220, int, 1, 4096)  # slices are resized to this side
        hidden: list[int] = hp.numbers([64], integer=True)  # hidden layer widths
        norm: str = hp.choice("window", ("window",))
        window: list[float] = hp.window([-1000.0, 1000.0])

    def build_core(self, in_channels: int) -> nn.Module:
        return DenseSegNet(
            in_channels,
            self.params.work_size,
            tuple(self.params.hidden),
        )
