"""The torch networks behind the gradient-trained models, and their intensity normalisers.

Every network here maps *normalised* inputs (B, C, S, S) to logits (B, 16, S, S). `SegNet`
puts the model's normaliser (the plan's `Normalisation`, amoseg.preprocessing.normalise) in
front, so the exported module takes raw stored intensities (HU for CT) — plus the image's
mean/std for a per-image z-score — and ONNX users need no pre-processing code.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from amoseg.labels import NUM_CLASSES
from amoseg.preprocessing.normalise import Normalisation, NormaliseModule


def make_norm(mode: str, window: tuple[float, ...] | list[float]) -> NormaliseModule:
    """The normaliser a recipe's `norm` / `window` parameters name, as the plan's
    `Normalisation` (one implementation for training, inference and export): "window"
    [lo, hi], "ct" [lo, hi, mean, std] (the plan's), "zscore" (per image), "maxabs"."""
    if mode == "window":
        norm = Normalisation("window", clip=(float(window[0]), float(window[1])))
    elif mode == "ct":
        lo, hi, mean, std = (float(v) for v in window)
        norm = Normalisation("ct", clip=(lo, hi), mean=mean, std=std)
    elif mode in ("zscore", "maxabs"):
        norm = Normalisation(mode)
    else:
        raise ValueError(f"unknown intensity normalisation '{mode}'")
    return NormaliseModule(norm)


class SegNet(nn.Module):
    """normaliser → core network. `stats`: the whole image's [mean, std] ((B, 2) or (2,)),
    needed by a per-image z-score only. `normalised=True` skips the normaliser (training
    applies it itself so augmentation can work in the normalised intensity space)."""

    def __init__(self, norm: nn.Module, core: nn.Module):
        super().__init__()
        self.norm = norm
        self.core = core

    @property
    def needs_stats(self) -> bool:
        return bool(getattr(self.norm, "needs_stats", False))

    def forward(
        self, x: torch.Tensor, stats: torch.Tensor | None = None, normalised: bool = False
    ) -> torch.Tensor:
        return self.core(x if normalised else self.norm(x, stats))


class PatchLogReg(nn.Module):
    """One k×k convolution with 16 outputs: softmax over its outputs is exactly multinomial
    logistic regression on the pixel's zero-padded k×k neighbourhood (k=1: the pixel alone),
    with one weight vector + bias per class shared by all positions."""

    def __init__(self, in_channels: int, kernel: int, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DenseSegNet(nn.Module):
    """Fully connected net: image resized to work×work → flat → hidden layers → work×work×16
    logits, resized back to the input size. No convolution anywhere (the report's FC net)."""

    def __init__(
        self,
        in_channels: int,
        work_size: int = 220,
        hidden: tuple[int, ...] = (64,),
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__()
        self.work_size = work_size
        self.num_classes = num_classes
        dims = [in_channels * work_size * work_size, *hidden]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(dims):
            layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-1], num_classes * work_size * work_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        w = self.work_size
        small = F.interpolate(x, size=(w, w), mode="bilinear", align_corners=False)
        logits = self.mlp(small.flatten(1)).view(-1, self.num_classes, w, w)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet2d(nn.Module):
    """Plain 2D U-Net: (conv-BN-ReLU)×2 blocks, max-pool down, transposed-conv up, skip
    concatenation. base=32, depth=4 gives 5 levels (32..512 channels), 7.8 M parameters.
    Inputs whose side is not a multiple of 2**depth are padded and the logits cropped back."""

    def __init__(
        self, in_channels: int, num_classes: int = NUM_CLASSES, base: int = 32, depth: int = 4
    ):
        super().__init__()
        chans = [base * 2**i for i in range(depth + 1)]
        self.depth = depth
        self.enc = nn.ModuleList(
            [_block(in_channels, chans[0])] + [_block(chans[i], chans[i + 1]) for i in range(depth)]
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.dec = nn.ModuleList(_block(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    #: 2×2 max pooling as the max of four strided views (`use_strided_pooling`).
    strided_pool = False

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if not self.strided_pool:
            return F.max_pool2d(x, 2)
        return torch.maximum(
            torch.maximum(x[..., ::2, ::2], x[..., 1::2, ::2]),
            torch.maximum(x[..., ::2, 1::2], x[..., 1::2, 1::2]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2**self.depth
        ph, pw = (-h) % m, (-w) % m
        # an ONNX trace keeps the padding whatever the example's size, so the export takes
        # any plane size (a planned 2d run's planes are rarely multiples of m)
        padded = torch.jit.is_tracing() or bool(ph or pw)
        if padded:
            x = F.pad(x, (0, pw, 0, ph))
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self._pool(x))
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.up, self.dec, strict=True):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        x = self.head(x)
        return x[..., :h, :w] if padded else x


class DeepSupervisedUNet2d(UNet2d):
    """UNet2d plus 1×1 heads on the decoder levels at 1/2 … 1/2^(depth-2) (nnU-Net's deep
    supervision; its lowest-resolution output has weight 0, so it gets no head). Training
    forward: [full, 1/2, ...] logits, each at its own resolution; eval: full only (export,
    inference and validation see a plain UNet2d)."""

    def __init__(
        self, in_channels: int, num_classes: int = NUM_CLASSES, base: int = 32, depth: int = 4
    ):
        super().__init__(in_channels, num_classes, base, depth)
        self.ds_heads = nn.ModuleList(
            nn.Conv2d(base * 2**level, num_classes, 1) for level in range(1, depth - 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:  # type: ignore[override]
        if not self.training or not len(self.ds_heads):
            return super().forward(x)
        h, w = x.shape[-2:]
        m = 2**self.depth
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else self._pool(x))
            skips.append(x)
        x = skips.pop()
        by_level: dict[int, torch.Tensor] = {}
        for j, (up, dec) in enumerate(zip(self.up, self.dec, strict=True)):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
            level = self.depth - 1 - j
            if 1 <= level <= len(self.ds_heads):
                s = 2**level
                head = self.ds_heads[level - 1](x)
                by_level[level] = head[..., : -(-h // s), : -(-w // s)]
        full = self.head(x)[..., :h, :w]
        return [full, *(by_level[level] for level in sorted(by_level))]


def use_strided_pooling(module: nn.Module) -> nn.Module:
    """Switch every UNet2d in `module` to strided-view max pooling: the same values, but on a
    CPU about 2× faster than `max_pool2d` (which computes indices too), ≈ 3 % of a bf16
    forward pass. For CPU inference only: an ONNX export would trace four ops instead of one."""
    for m in module.modules():
        if isinstance(m, UNet2d):
            m.strided_pool = True
    return module


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
