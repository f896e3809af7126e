"""`prior`: the per-position class prior — the report's floor (95.4 % accuracy, 6 % mIoU).

For every pixel position (i, j) of the S×S slice it counts how often each class occurs there
over all training slices and predicts the most frequent one, ignoring the image entirely.
Not gradient-based: one counting pass is the whole fit. Class probabilities are the
Laplace-smoothed relative counts, so the training NLL is finite.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amoseg.devices import resolve_device
from amoseg.labels import NUM_CLASSES
from amoseg.models.base import SegmentationModel
from amoseg.models.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from amoseg.models.registry import register_model
from amoseg.ops.inferers import Predictor

SMOOTHING = 1.0


class _PriorModule(nn.Module):
    """Exportable: ignores the image, returns the log-prior at every position."""

    def __init__(self, log_prior: torch.Tensor):
        super().__init__()
        self.register_buffer("log_prior", log_prior)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_prior[None].expand(x.shape[0], -1, -1, -1) + 0 * x[:, :1]


@register_model
class PositionPrior(SegmentationModel):
    name = "prior"
    ladder = 0
    gradient_trained = False

    def __init__(self, input_size: int | None = None, **hparams: Any):
        from amoseg.errors import AmosegError

        if hparams:
            raise AmosegError(
                f"unknown hyper-parameter(s) {', '.join(sorted(hparams))} for model 'prior'",
                hint="prior has none",
            )
        self.hparams: dict[str, Any] = {}
        self.input_size = int(input_size) if input_size else 0
        self.context = 0
        self.device = torch.device("cpu")
        s = max(self.input_size, 1)
        self.counts = torch.zeros(NUM_CLASSES, s, s, dtype=torch.int64)

    n_params = property(lambda self: int(self.counts.numel()))

    def to(self, device: str | torch.device) -> PositionPrior:
        self.device = resolve_device(device)
        return self

    def log_prior(self) -> torch.Tensor:
        c = self.counts.double() + SMOOTHING
        return (c / c.sum(dim=0, keepdim=True)).log().float()

    # ---- fit ----------------------------------------------------------------------------
    def count(self, labels: np.ndarray) -> None:
        """Add a (N, S, S) label stack to the per-position class counts."""
        s = self.counts.shape[-1]
        pos = np.arange(s * s, dtype=np.int64)
        total = np.zeros(NUM_CLASSES * s * s, dtype=np.int64)
        for start in range(0, labels.shape[0], 16):  # chunks: bounded memory at 640²
            chunk = np.asarray(labels[start : start + 16], dtype=np.int64).reshape(-1, s * s)
            total += np.bincount((chunk * (s * s) + pos).ravel(), minlength=total.size)
        self.counts += torch.from_numpy(total.reshape(NUM_CLASSES, s, s))

    def nll(self, labels: np.ndarray) -> tuple[float, int]:
        """Summed negative log-likelihood of a label stack under the prior, and pixel count."""
        lp = self.log_prior()
        total = 0.0
        for start in range(0, labels.shape[0], 16):
            lab = torch.from_numpy(np.asarray(labels[start : start + 16], dtype=np.int64))
            total -= float(lp[None].expand(lab.shape[0], -1, -1, -1).gather(1, lab[:, None]).sum())
        return total, int(np.prod(labels.shape))

    def fit_statistics(self, store: Any) -> float:
        """Count the training labels per position; returns the training NLL per pixel."""
        cases = store.cases("train")
        for case in cases:
            self.count(store.label(case))
        nll, pixels = 0.0, 0
        for case in cases:
            a, b = self.nll(store.label(case))
            nll, pixels = nll + a, pixels + b
        return nll / max(pixels, 1)

    # ---- predict --------------------------------------------------------------------------
    def _check(self, x: Any) -> None:
        if tuple(x.shape[-2:]) != tuple(self.counts.shape[-2:]):
            raise ValueError(f"prior was fitted at {tuple(self.counts.shape[-2:])}, got {x.shape}")

    def predictor(self, stats: Any = None) -> Predictor:
        """The log-prior at every position, whatever the image (on the input's device)."""
        log_prior = self.log_prior()

        def predict(x: torch.Tensor) -> torch.Tensor:
            self._check(x)
            return log_prior.to(x.device)[None].expand(x.shape[0], -1, -1, -1)

        return predict

    def predict_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._check(x)
        probs = self.log_prior().exp().numpy()
        labels = probs.argmax(axis=0).astype(np.uint8)
        b = x.shape[0]
        return np.repeat(labels[None], b, 0), np.repeat(probs[None], b, 0)

    def export_module(self) -> nn.Module:
        return _PriorModule(self.log_prior()).eval()

    # ---- persistence ----------------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.name,
            "hparams": {},
            "input_size": self.input_size,
            "state": {"counts": self.counts.clone()},
        }

    def save(self, path: Path) -> None:
        save_checkpoint(self.checkpoint_payload(), path)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], device: str = "auto") -> PositionPrior:
        model = cls(input_size=ckpt.get("input_size"))
        model.counts = ckpt["state"]["counts"].clone()
        return model.to(device)

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> PositionPrior:
        return cls.from_checkpoint(load_checkpoint(Path(path)), device)
