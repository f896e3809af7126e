"""The prediction twin of `unet3d`'s network: MONAI's DynUNet (residual blocks, instance
norm, leaky ReLU; `amoseg.models.unet3d.build_resunet`) rebuilt in plain torch, with the
same module tree and state-dict keys, so a run's weights load into it unchanged.

Why: `import monai` loads most of MONAI (its transforms, data, apps; about 1.5 s of a
7.6 s `amoseg predict` of a 3d_lowres run on a 2-core CPU), and prediction needs none of it.
Training keeps MONAI's class (its initialisation and deep-supervision heads).
`tests/test_resunet.py` checks that both give the same logits for the same weights, for
the stride patterns unet3d plans; a MONAI release that changed DynUNet's layers would fail
there, not in a user's prediction.

Layout as MONAI 1.x builds it (`monai.networks.nets.dynunet`, `blocks.dynunet_block`):
convolutions without bias inside a `Convolution` container (`.conv`), padding
int((k - s + 1) / 2), transposed convolutions with kernel = stride and no bias, a 1×1×1
output convolution with bias, residual blocks with a 1×1×1 projection (`conv3`, `norm3`)
where channels or stride change, and the recursive `skip_layers` that share those blocks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class _Convolution(nn.Sequential):
    """MONAI's `Convolution` with no norm / activation: a container whose one child is
    `conv` (hence keys like `conv1.conv.weight`)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.add_module("conv", conv)


def _conv(cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int], bias: bool = False):
    pad = tuple(int((k - s + 1) / 2) for k, s in zip(kernel, stride, strict=True))
    return _Convolution(nn.Conv3d(cin, cout, tuple(kernel), tuple(stride), pad, bias=bias))


def _up_conv(cin: int, cout: int, stride: Sequence[int]) -> _Convolution:
    # kernel = stride: padding int(1 / 2) = 0, output padding 2·0 + s − k = 0
    return _Convolution(nn.ConvTranspose3d(cin, cout, tuple(stride), tuple(stride), bias=False))


def _norm(channels: int) -> nn.InstanceNorm3d:
    return nn.InstanceNorm3d(channels, affine=True)


class _ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.conv1 = _conv(cin, cout, kernel, stride)
        self.conv2 = _conv(cout, cout, kernel, [1] * len(kernel))
        self.lrelu = nn.LeakyReLU(0.01, inplace=True)
        self.norm1, self.norm2 = _norm(cout), _norm(cout)
        if cin != cout or any(s != 1 for s in stride):
            self.conv3 = _conv(cin, cout, [1] * len(kernel), stride)
            self.norm3 = _norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(x)))))
        residual = self.norm3(self.conv3(x)) if hasattr(self, "conv3") else x
        return self.lrelu(out + residual)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: Sequence[int]):
        super().__init__()
        ones = [1] * len(kernel)
        self.conv1 = _conv(cin, cout, kernel, ones)
        self.conv2 = _conv(cout, cout, kernel, ones)
        self.lrelu = nn.LeakyReLU(0.01, inplace=True)
        self.norm1, self.norm2 = _norm(cout), _norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.lrelu(self.norm1(self.conv1(x)))
        return self.lrelu(self.norm2(self.conv2(out)))


class _UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: Sequence[int], stride: Sequence[int]):
        super().__init__()
        self.transp_conv = _up_conv(cin, cout, stride)
        self.conv_block = _BasicBlock(2 * cout, cout, kernel)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat((self.transp_conv(x), skip), dim=1))


class _OutBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _conv(cin, cout, [1, 1, 1], [1, 1, 1], bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _SkipLayer(nn.Module):
    """One level of the U: down, the levels below, up with the skip. `super_head` is only
    registered (for its state-dict keys); prediction uses the full-resolution output."""

    def __init__(self, downsample: nn.Module, upsample: nn.Module, next_layer: nn.Module):
        super().__init__()
        self.downsample = downsample
        self.next_layer = next_layer
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = self.downsample(x)
        return self.upsample(self.next_layer(down), down)


class ResUNet(nn.Module):
    """DynUNet's eval-mode network (full-resolution logits), for loading trained weights."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        strides: Sequence[Sequence[int]],
        filters: Sequence[int],
        deep_supr_num: int,
    ):
        super().__init__()
        kernel = [3, 3, 3]
        n = len(strides)
        self.input_block = _ResBlock(in_channels, filters[0], kernel, strides[0])
        self.downsamples = nn.ModuleList(
            _ResBlock(filters[i], filters[i + 1], kernel, strides[i + 1]) for i in range(n - 2)
        )
        self.bottleneck = _ResBlock(filters[-2], filters[-1], kernel, strides[-1])
        self.upsamples = nn.ModuleList(
            _UpBlock(filters[i + 1], filters[i], kernel, strides[i + 1])
            for i in reversed(range(n - 1))
        )
        self.output_block = _OutBlock(filters[0], out_channels)
        if deep_supr_num:
            self.deep_supervision_heads = nn.ModuleList(
                _OutBlock(filters[i + 1], out_channels) for i in range(deep_supr_num)
            )
        downs = [self.input_block, *self.downsamples]
        ups = list(self.upsamples)[::-1]
        layer: nn.Module = self.bottleneck
        for level in reversed(range(n - 1)):
            layer = _SkipLayer(downs[level], ups[level], layer)
            if 1 <= level <= deep_supr_num:  # MONAI's heads: levels 1 .. deep_supr_num
                layer.super_head = self.deep_supervision_heads[level - 1]
        self.skip_layers = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_block(self.skip_layers(x))
