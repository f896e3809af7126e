"""`unet-seed`: the report's U-Net recipe, reproduced as written.

Plain U-Net (encoder/decoder with skip connections); each input slice scaled to [-1, 1] by
dividing by its maximum absolute intensity (the report's "scaled by the max intensity", done
per image as it was loaded); cross-entropy weighted inversely to class frequency in the
training split; Adam with the report's Optuna-tuned lr 7.891e-05, weight decay 1.572e-03
(Adam's L2 penalty, not AdamW), batch size 2; constant LR; fp32; no augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from amoseg import hparams as hp
from amoseg.models.networks import UNet2d
from amoseg.models.registry import register_model
from amoseg.models.torch_model import TorchModel
from amoseg.ops.losses import inverse_frequency_weights, weighted_ce


@register_model
class UNetSeed(TorchModel):
    name = "unet-seed"
    ladder = 5
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {
        "lr": 7.891e-05,
        "weight_decay": 1.572e-03,
        "batch_size": 2,
    }

    @dataclass(frozen=True)
    class Params(hp.Params):
        base: int = hp.number(32, int, 1, 1024)  # channels of the first level
        depth: int = hp.number(4, int, 1, 10)  # down-samplings
        norm: str = hp.choice("maxabs", ("maxabs",))  # the report divides by the maximum
        #: filled from the training split's pixel counts
        class_weights: list[float] | None = hp.numbers(None, integer=False, allow_none=True)

    def build_core(self, in_channels: int) -> nn.Module:
        return UNet2d(in_channels, base=self.params.base, depth=self.params.depth)

    @classmethod
    def store_hparams(cls, store: Any, hparams: dict[str, Any]) -> dict[str, Any]:
        if hparams.get("class_weights") is not None:
            return {}
        return {"class_weights": inverse_frequency_weights(store.class_pixel_counts)}

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weights = self.params.class_weights
        if weights is None:
            return super().loss(logits, target)
        cached = getattr(self, "_weights", None)
        if cached is None or cached.device != logits.device:  # one copy, not one per step
            cached = torch.tensor(weights, dtype=torch.float32, device=logits.device)
            self._weights = cached
        return weighted_ce(logits, target, cached)
