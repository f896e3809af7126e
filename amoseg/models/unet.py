"""`unet`: the modern 2D U-Net recipe (the default model for `predict`).

Same network family as `unet-seed`, trained the way a 2020s baseline would be:
- intensities: CT-only stores get a fixed HU window (clip to [-1000, 1000] → [-1, 1]); stores
  with MR get a per-image z-score (MR has no absolute scale);
- 2.5D input: `context` adjacent slices on each side as extra channels (default 1 → 3 ch);
- CT: training batches and predictions both cut to the body's box (`body_crop`), so the
  network skips the air around the patient and sees the same frame edge in both;
- Dice + cross-entropy loss; batch augmentation on the device (rotation, scaling, elastic,
  contrast/brightness, gamma, noise — never left/right flips);
- AdamW with linear warm-up then cosine decay; bf16 autocast and channels_last on GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from amoseg import hparams as hp
from amoseg.models.networks import DeepSupervisedUNet2d, UNet2d
from amoseg.models.registry import register_model
from amoseg.models.torch_model import TorchModel, warmup_cosine
from amoseg.ops.augment import augment_batch

#: the intensity normalisations a modern recipe may use; None: chosen from the training store
#: ("ct": the plan's CT scheme, "window": seed CT, "zscore": MR or mixed stores)
NORMS = ("window", "ct", "zscore")


@dataclass(frozen=True)
class ModernParams(hp.Params):
    """What the modern 2D and 3D recipes share."""

    base: int = hp.number(32, int, 1, 1024)  # channels of the first level
    norm: str | None = hp.choice(None, NORMS)
    window: list[float] | None = hp.window()  # [lo, hi] HU, or the plan's [lo, hi, mean, std]
    augment: bool = hp.flag(True)
    lambda_dice: float = hp.number(1.0, float, 0.0, 1000.0)
    lambda_ce: float = hp.number(1.0, float, 0.0, 1000.0)
    warmup: float = hp.number(0.05, float, 0.0, 1.0)  # share of the steps spent warming up

    def validate(self) -> None:
        hp.check_loss_weights(self.lambda_dice, self.lambda_ce)


#: HU above which a voxel counts as body: between air/foam (< -800) and fat (≈ -100).
BODY_HU = -500.0


def store_is_ct_only(store: Any) -> bool:
    from amoseg.labels import modality_of

    cases = store.cases("train")
    return all(
        str(store.meta(c).get("modality", modality_of(c))).lower().startswith("ct") for c in cases
    )


def plan_ct_normalisation(store: Any) -> list[float] | None:
    """[lo, hi, mean, std] of a planned (2d/3d) CT store's plan normalisation, or None for a
    seed store (its U-Nets keep the report's fixed HU window)."""
    if store.info.get("size") is not None or not store.info.get("plan"):
        return None
    norm = store.configuration.normalisation.get("ct")
    if norm is None or norm.scheme != "ct":
        return None
    return [float(norm.clip[0]), float(norm.clip[1]), float(norm.mean), float(norm.std)]


@register_model
class UNetModern(TorchModel):
    name = "unet"
    ladder = 6
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {
        "lr": 2e-3,
        "weight_decay": 1e-4,
        # 4, not 8: twice the optimiser steps per epoch; at short budgets (4 demo epochs) that
        # is 27 % vs 13 % test mIoU (bench/unet_vs_seed.py). On a GPU pass a larger batch.
        "batch_size": 4,
    }

    @dataclass(frozen=True)
    class Params(ModernParams):
        depth: int = hp.number(4, int, 1, 10)  # down-samplings
        context: int = hp.number(1, int, 0, 16)  # 2.5D: adjacent slices on each side
        #: train and predict on the body's box (CT): ≈ 1.5× faster predict
        body_crop: bool = hp.flag(True)
        #: nnU-Net's deep supervision (heads at 1/2 … 1/2^(depth-2), downsampled targets);
        #: off by default until measured against the recipe without it (docs/training.md)
        deep_supervision: bool = hp.flag(False)

    optimizer_name = "adamw"
    fast_gpu = True

    _loss: nn.Module | None = None

    def build_norm(self) -> nn.Module:
        from amoseg.models.networks import make_norm

        mode = self.params.norm or "window"
        window = self.params.window or (
            [-1000.0, 1000.0] if mode == "window" else [-32768.0, 32767.0]
        )
        return make_norm(mode, window)

    @property
    def body_threshold(self) -> float | None:  # type: ignore[override]
        """Train and predict on the body's box (`body_crop`) when intensities go through a
        fixed HU window: a crop leaves that unchanged, unlike a per-image z-score (MR)."""
        windowed = (self.params.norm or "window") == "window"
        return BODY_HU if windowed and self.params.body_crop else None

    @property
    def size_multiple(self) -> int:  # type: ignore[override]
        return 2**self.params.depth

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], device: str = "auto") -> TorchModel:
        # runs saved before body crops existed were trained on whole slices
        hparams = {"body_crop": False, **ckpt["hparams"]}
        return super().from_checkpoint({**ckpt, "hparams": hparams}, device)

    def build_core(self, in_channels: int) -> nn.Module:
        net = DeepSupervisedUNet2d if self.params.deep_supervision else UNet2d
        return net(in_channels, base=self.params.base, depth=self.params.depth)

    @classmethod
    def store_hparams(cls, store: Any, hparams: dict[str, Any]) -> dict[str, Any]:
        if hparams.get("norm"):
            return {}
        if store_is_ct_only(store):
            planned = plan_ct_normalisation(store)
            if planned is not None:
                return {"norm": "ct", "window": planned}
            return {"norm": "window", "window": [-1000.0, 1000.0]}
        return {"norm": "zscore", "window": [-32768.0, 32767.0]}

    def loss(self, logits: Any, target: torch.Tensor) -> torch.Tensor:
        if self._loss is None:  # built on first use: inference never imports MONAI
            from amoseg.ops.losses import DiceCE

            self._loss = DiceCE(self.params.lambda_dice, self.params.lambda_ce)
        if isinstance(logits, list):  # deep supervision: [full, 1/2, ...] at own resolutions
            from amoseg.ops.losses import deep_supervision_loss, deep_supervision_weights

            weights = deep_supervision_weights(self.params.depth)
            return deep_supervision_loss(self._loss, logits, target, weights[: len(logits)])
        return self._loss(logits, target)

    def augment(self, x, y, gen):
        if not self.params.augment:
            return x, y
        return augment_batch(x, y, gen)

    def lr_lambda(self, total_steps: int) -> Callable[[int], float]:
        return warmup_cosine(total_steps, warmup=self.params.warmup)
