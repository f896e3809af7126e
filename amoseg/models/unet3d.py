"""`unet3d`: a 3D U-Net on patches, as nnU-Net's residual-encoder recipe (ResEnc).

- network: MONAI's `DynUNet` (a re-implementation of nnU-Net's dynamic U-Net) with residual
  blocks, instance norm, leaky ReLU, `base` channels in the first stage doubling per stage up
  to 320, strides by nnU-Net's rule, deep-supervision heads. (`dynamic-network-architectures`
  0.4.4 pulls timm and a CUDA torchvision build that does not import beside our CPU torch);
- training: patches from the store's volumes (a `3d` store: the plan's patch size), one
  third centred on an organ (`amoseg.store.samplers.PatchDataset`); Dice + CE at every
  decoder scale against targets downsampled to it, weights 1/2^k, the coarsest 0 (nnU-Net's;
  `amoseg.ops.losses.deep_supervision_loss`);
  3D augmentation on the device (`amoseg.ops.augment3d`, left–right mirroring swaps
  paired organs);
  AdamW with warm-up then cosine decay; bf16 autocast and channels_last_3d on GPU;
- inference: sliding window with Gaussian weighting (nnU-Net's tiles, `amoseg.ops.sliding`),
  optionally test-time mirroring along every axis combination with the left–right label
  swap; a model rebuilt for prediction (`TorchModel.inference_only`) runs the network's
  plain-torch twin (`amoseg.models.resunet`), so predict does not import MONAI.

`patch_size` is (x, y, z) voxels along the RAS+ axes, as everywhere in amoseg (plan.json,
`--patch-size`); store volumes and network inputs are arrays (slices, rows, cols) = (z, x, y)
(`amoseg.preprocessing.geometry.array_order`, the one conversion), so the patient's
left–right axis is array axis `lr_axis` = 1. The old `patch` parameter, in array order, is
still read from older checkpoints and settings.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from amoseg import hparams as hp
from amoseg.errors import AmosegError
from amoseg.labels import NUM_CLASSES
from amoseg.models.cascade_input import (
    CASCADE_INPUTS,
    CASCADE_ORGANS,
    ImageChannelNorm,
    OneHotInput,
)
from amoseg.models.registry import register_model
from amoseg.models.torch_model import TorchModel, warmup_cosine
from amoseg.models.unet import ModernParams, UNetModern
from amoseg.ops.inferers import Inferer, SlidingWindowInferer
from amoseg.preprocessing.geometry import array_order

#: nnU-Net's cap on channels per stage
MAX_FEATURES = 320


def build_resunet(
    in_channels: int,
    base: int,
    stages: int,
    strides: Sequence[Sequence[int]],
    plain: bool = False,
) -> nn.Module:
    """MONAI's DynUNet (nnU-Net's dynamic U-Net) with residual blocks, instance norm, leaky
    ReLU and deep-supervision heads on the decoder levels below full resolution (the lowest
    of them weighs 0 in the loss, as nnU-Net). `plain`: its prediction twin in plain torch
    (`amoseg.models.resunet`: the same weights, no MONAI import)."""
    filters = [min(base * 2**i, MAX_FEATURES) for i in range(stages)]
    deep, heads = stages > 2, max(1, stages - 2)
    if plain:
        from amoseg.models.resunet import ResUNet

        return ResUNet(
            in_channels, NUM_CLASSES, [list(s) for s in strides], filters, heads if deep else 0
        )
    return _heads_at_own_resolution()(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=NUM_CLASSES,
        kernel_size=[[3, 3, 3]] * stages,
        strides=[list(s) for s in strides],
        upsample_kernel_size=[list(s) for s in strides[1:]],
        filters=filters,
        norm_name=("INSTANCE", {"affine": True}),
        act_name=("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        deep_supervision=deep,
        deep_supr_num=heads,
        res_block=True,
    )


@functools.cache
def _heads_at_own_resolution() -> type:
    """DynUNet whose training forward returns [full, 1/2, 1/4, ...] logits at their own
    resolution (MONAI's stacks every head upsampled to full size); eval: full only."""
    from monai.networks.nets import DynUNet

    class DeepSupervisedDynUNet(DynUNet):
        def forward(self, x: torch.Tensor) -> Any:
            out = self.output_block(self.skip_layers(x))
            if self.training and self.deep_supervision:
                return [out, *self.heads]
            return out

    return DeepSupervisedDynUNet


def stage_strides(patch: Sequence[int], stages: int) -> list[list[int]]:
    """Stride 2 along an axis until it is down to 4 voxels (nnU-Net's rule), first stage 1."""
    size = [int(p) for p in patch]
    out = [[1, 1, 1]]
    for _ in range(stages - 1):
        step = [2 if n >= 8 else 1 for n in size]
        size = [n // s for n, s in zip(size, step, strict=True)]
        out.append(step)
    return out


@register_model
class UNet3d(TorchModel):
    name = "unet3d"
    ladder = 7
    in_ladder = False
    dims = 3
    mirror_axes = (0, 1, 2)  # augment_patches mirrors every axis (left–right: labels swapped)
    TRAIN_DEFAULTS: ClassVar[dict[str, Any]] = {"lr": 2e-3, "weight_decay": 3e-5, "batch_size": 2}

    @dataclass(frozen=True)
    class Params(ModernParams):
        stages: int = hp.number(5, int, 2, 11)  # resolution stages (down-samplings + 1)
        #: (x, y, z) voxels; None: the plan's, or up to 128×128×64
        patch_size: list[int] | None = hp.sizes(3)
        deep_supervision: bool = hp.flag(True)
        #: share of training patches centred on an organ (nnU-Net's oversampling)
        foreground: float = hp.number(1 / 3, float, 0.0, 1.0)
        overlap: float = hp.number(0.5, float, 0.0, 0.95)  # sliding-window tile overlap
        lr_axis: int = hp.number(1, int, 0, 2)  # the array axis of the patient's left–right
        #: the network's input channels: 1 (the image), or 1 + 15 for a cascade stage (the
        #: image and the previous stage's organs one-hot; from the store's configuration)
        in_channels: int = hp.number(1, int, 1, 1 + CASCADE_ORGANS)
        #: a cascade stage: perturb the previous stage's training labels as nnU-Net does
        #: (morphology, dropped components: `amoseg.ops.previous_augment`)
        previous_augment: bool = hp.flag(True)

        def validate(self) -> None:
            super().validate()
            if self.in_channels not in (1, 1 + CASCADE_ORGANS):
                raise AmosegError(
                    f"hparams in_channels must be 1 or {1 + CASCADE_ORGANS} (a cascade stage), "
                    f"got {self.in_channels}"
                )

    optimizer_name = "adamw"
    fast_gpu = True
    memory_format = torch.channels_last_3d
    DEFAULT_PATCH = (128, 128, 64)  # (x, y, z)

    _loss: nn.Module | None = None

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """The old `patch` (z, x, y: runs saved before `patch_size`) as `patch_size`."""
        hparams = dict(hparams)
        legacy = hparams.pop("patch", None)
        if legacy is not None:
            if hparams.get("patch_size") is not None:
                raise AmosegError("give patch_size (x, y, z) or the old patch (z, x, y), not both")
            z, x, y = (int(n) for n in legacy)
            hparams["patch_size"] = [x, y, z]
        return hparams

    @classmethod
    def trained_mirror_axes(cls, hparams: dict[str, Any]) -> tuple[int, ...]:
        if not hparams.get("augment", True):
            return ()
        if int(hparams.get("in_channels", 1)) > 1:
            # a cascade's label channel would need its paired organs swapped under a
            # left–right flip: test-time mirroring keeps to the other axes
            lr = int(hparams.get("lr_axis", cls.HPARAMS["lr_axis"]))
            return tuple(a for a in cls.mirror_axes if a != lr)
        return cls.mirror_axes

    # ---- the network --------------------------------------------------------------------
    @property
    def patch_size(self) -> tuple[int, int, int]:
        """(x, y, z) voxels."""
        return tuple(self.params.patch_size or self.DEFAULT_PATCH)  # type: ignore[return-value]

    @property
    def patch(self) -> tuple[int, int, int]:
        """The patch in array order (z, x, y): what the network and the inferer see."""
        return array_order(self.patch_size)  # type: ignore[return-value]

    @property
    def size_multiple(self) -> int:  # type: ignore[override]
        return 2 ** (self.params.stages - 1)

    @property
    def cascade(self) -> bool:
        """A cascade stage: the input adds the previous stage's organs, one-hot."""
        return self.params.in_channels > 1

    @property
    def input_channels(self) -> int:  # type: ignore[override]
        """What the module takes: the image, plus the previous stage's label map (expanded
        to one-hot organ channels inside, `amoseg.models.cascade_input`)."""
        return CASCADE_INPUTS if self.cascade else 1

    def build_core(self, in_channels: int) -> nn.Module:
        stages = self.params.stages
        channels = self.params.in_channels
        strides = stage_strides(self.patch, stages)
        net = build_resunet(channels, self.params.base, stages, strides, self.inference_only)
        return OneHotInput(net, channels - 1) if self.cascade else net

    def build_norm(self) -> nn.Module:
        norm = UNetModern.build_norm(self)
        return ImageChannelNorm(norm) if self.cascade else norm

    @classmethod
    def store_hparams(cls, store: Any, hparams: dict[str, Any]) -> dict[str, Any]:
        out = UNetModern.store_hparams(store, hparams)
        if store.configuration.previous_stage is not None:
            out["in_channels"] = 1 + CASCADE_ORGANS  # the store's previous-stage labels
        if not hparams.get("patch_size") and not hparams.get("patch"):
            stages = int(hparams.get("stages") or cls.Params.defaults()["stages"])
            target = cls.DEFAULT_PATCH
            planned = store.info.get("size") is None  # a planned store: its plan's patch
            if planned and len(store.configuration.patch_size) == 3:
                target = store.configuration.patch_size
            out["patch_size"] = fit_patch(store, target, 2 ** (stages - 1))
        return out

    # ---- training hooks -------------------------------------------------------------------
    def train_dataset(self, store: Any, seed: int, split: str = "train") -> Any:
        """3D patches of this model's size from any store's (Z, X, Y) volumes (a `3d` store
        or the stacks of a seed store), a third centred on an organ (`split` "val": the
        validation patches). A cascade's training patches carry perturbed previous-stage
        labels (nnU-Net's cascade augmentation); its validation patches the true ones."""
        from amoseg.ops.previous_augment import perturb_previous
        from amoseg.store.samplers import EpochPatches, PatchDataset

        perturb = split == "train" and self.params.augment and self.params.previous_augment
        patches = PatchDataset(
            store, split, self.patch_size, seed=seed,
            foreground_share=self.params.foreground, with_stats=self.needs_stats,
            previous_transform=perturb_previous if perturb else None,
        )  # fmt: skip
        return EpochPatches(patches)

    def crop_batch(self, x, y):
        return x, y

    def loss(self, logits: Any, target: torch.Tensor) -> torch.Tensor:
        from amoseg.ops.losses import DiceCE, deep_supervision_loss, deep_supervision_weights

        if self._loss is None:
            self._loss = DiceCE(self.params.lambda_dice, self.params.lambda_ce)
        # training with deep supervision: [full, 1/2, ...] logits, each at its own resolution
        outputs = list(logits) if isinstance(logits, list | tuple) else [logits]
        if not self.params.deep_supervision:
            return self._loss(outputs[0], target)
        return deep_supervision_loss(
            self._loss, outputs, target, deep_supervision_weights(len(outputs))
        )

    def augment(self, x, y, gen):
        if not self.params.augment:
            return x, y
        from amoseg.ops.augment3d import augment_patches

        lr_dim = self.params.lr_axis
        if not self.cascade:
            return augment_patches(x, y, gen, lr_dim=lr_dim)
        # the previous stage's labels move with the image and the target (nearest, paired
        # organs swapped when mirrored left–right); intensity augmentation is the image's only
        image, y, previous = augment_patches(
            x[:, :1], y, gen, lr_dim=lr_dim, extra=x[:, 1].round().long()
        )
        return torch.cat([image, previous[:, None].to(image.dtype)], dim=1), y

    def lr_lambda(self, total_steps: int) -> Callable[[int], float]:
        return warmup_cosine(total_steps, warmup=self.params.warmup)

    # ---- inference ------------------------------------------------------------------------
    def inferer(self, batch_size: int = 2) -> Inferer:
        """Overlapping patches of the training size, blended with Gaussian weights; at most
        4 patches per forward pass (a 3D patch weighs as much as a batch of slices)."""
        batch = max(1, min(int(batch_size), 4))
        return SlidingWindowInferer(self.patch, batch, self.params.overlap)

    def volume_scores(self, volume: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """(Z, X, Y) raw intensities → (Z, 16, X, Y) probabilities on the model's device;
        `tta`: averaged over the 8 mirrorings, paired organs swapped (`amoseg.ops.tta`)."""
        from amoseg.ops.tta import mirrored
        from amoseg.preprocessing.normalise import image_stats

        stats = image_stats(volume) if self.needs_stats else None
        predictor = mirrored(self.predictor(stats)) if tta else self.predictor(stats)
        batch = 2 if self.device.type == "cuda" else 1
        return self.inferer(batch)(volume.to(self.device), predictor).softmax(1)

    def predict_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """x (B, 1, Z, X, Y) raw patches → labels (B, Z, X, Y), probabilities (B, 16, ...)."""
        return super().predict_batch(x)

    def export_module(self) -> nn.Module:
        """raw (B, 1, Z, X, Y) → logits (B, 16, Z, X, Y), normaliser inside (eval mode: the
        full-resolution head only); for the sliding-window `TorchBackend`."""
        return super().export_module()


def fit_patch(store: Any, target: Sequence[int], multiple: int) -> list[int]:
    """The largest (x, y, z) patch ≤ `target` per axis that fits the median training volume,
    rounded down to a multiple of the network's down-sampling (never below one multiple)."""
    # stored volumes are (Z, X, Y) arrays: their (x, y, z) sizes
    shapes = np.array([np.roll(store.image(c).shape, -1) for c in store.cases("train")])
    median = np.median(shapes, axis=0) if len(shapes) else np.asarray(target)
    out = []
    for want, have in zip(target, median, strict=True):
        n = min(int(want), int(have))
        out.append(max(multiple, n // multiple * multiple))
    return out
