"""Test-time augmentation by mirroring, with the left–right label swap.

A predictor's input is (B, C, *spatial) on the canonical RAS+ grid with the axial slice axis
first among 3D axes: (B, C, X, Y) for slices, (B, 1, Z, X, Y) for patches. In both the
patient's left–right axis (X) is dimension ``ndim - 2``. `mirrored` averages the
probabilities of every mirroring of the in-plane axes (2D: 4; 3D: all 8 with the slice axis)
after mirroring each back — paired organs' channels swapped when X was mirrored
(`amoseg.data.mirror`) — and returns their log, so a softmax of its output is that average
and every caller keeps treating predictor outputs as logits. 2.5D slice models mirror only
in-plane: their context channels are neighbouring slices, so the slice axis cannot flip.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from amoseg.data.mirror import mirror_scores
from amoseg.ops.inferers import Inferer, Predictor


def mirror_sets(ndim: int, axes: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Every subset of the tensor dimensions TTA mirrors for an input of `ndim` dims:
    all spatial ones, or only the spatial `axes` (0 = the first spatial dimension) a model
    was trained to be invariant to."""
    dims = tuple(range(2, ndim)) if axes is None else tuple(2 + int(a) for a in axes)
    return [c for k in range(len(dims) + 1) for c in itertools.combinations(dims, k)]


def mirrored(predictor: Predictor, axes: Sequence[int] | None = None) -> Predictor:
    """`predictor` averaged over mirrorings along `axes` (all spatial axes when None; see
    the module docstring)."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        lr = x.ndim - 2
        total: torch.Tensor | None = None
        sets = mirror_sets(x.ndim, axes)
        for dims in sets:
            out = predictor(x.flip(dims) if dims else x).float().softmax(1)
            out = mirror_scores(out, dims, lr) if dims else out
            total = out if total is None else total + out
        assert total is not None
        return (total / len(sets)).clamp_min_(1e-12).log_()

    return predict


class MirroredBackend:
    """A scoring backend whose `scores` are test-time mirrored (along `axes`, or all spatial
    axes); everything else (device, input size, its own inferer) is the wrapped backend's."""

    def __init__(self, backend: Any, axes: Sequence[int] | None = None):
        self.backend = backend
        self.axes = None if axes is None else tuple(axes)
        self.scores = mirrored(backend.scores, self.axes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def predictor(self, stats: torch.Tensor | None = None) -> Predictor:
        return mirrored(self.backend.predictor(stats), self.axes)

    def inferer(self, batch_size: int) -> Inferer:
        return self.backend.inferer(batch_size)
