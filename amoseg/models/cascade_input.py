"""The input of a cascade stage (nnU-Net's `3d_cascade_fullres`): the image plus the previous
stage's prediction as one-hot organ channels.

The module takes two channels — the raw image and the previous stage's labels (AMOS ids, as
numbers) — and the network sees 1 + 15: the normalised image and one 0/1 channel per organ.
The one-hot expansion happens inside the module, on the device, so the store, the data loader,
the sliding window and an export carry one label channel instead of fifteen float ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amoseg.labels import NUM_CLASSES

#: one channel per foreground organ (AMOS ids 1..15), as nnU-Net's cascade
CASCADE_ORGANS = NUM_CLASSES - 1
#: what the module takes: the image and the previous stage's label map
CASCADE_INPUTS = 2


class ImageChannelNorm(nn.Module):
    """The recipe's normaliser on channel 0 (the image) only; the label channel passes as is."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.inner = norm

    @property
    def needs_stats(self) -> bool:
        return bool(getattr(self.inner, "needs_stats", False))

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat([self.inner(x[:, :1], stats), x[:, 1:].float()], dim=1)


def one_hot_organs(labels: torch.Tensor, organs: int = CASCADE_ORGANS) -> torch.Tensor:
    """(B, *spatial) label values (any dtype; rounded) → (B, organs, *spatial) 0/1 floats for
    AMOS ids 1..organs (background and out-of-range values: all zero)."""
    ids = labels.round().long().clamp(0, organs)
    hot = F.one_hot(ids, organs + 1)[..., 1:]  # drop background
    return hot.movedim(-1, 1).to(torch.float32)


class OneHotInput(nn.Module):
    """(B, 2, *spatial) [normalised image, previous labels] → (B, 1 + organs, *spatial) into
    `core`, which is built for 1 + organs input channels."""

    def __init__(self, core: nn.Module, organs: int = CASCADE_ORGANS):
        super().__init__()
        self.organs = int(organs)
        self.core = core

    def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
        hot = one_hot_organs(x[:, 1], self.organs).to(x.dtype)
        if x.is_contiguous(memory_format=torch.channels_last_3d) and x.ndim == 5:
            hot = hot.contiguous(memory_format=torch.channels_last_3d)
        return self.core(torch.cat([x[:, :1], hot], dim=1))
