"""Small models for prediction tests: exact, inspectable behaviour without training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from amoseg.labels import NUM_CLASSES
from amoseg.models.base import SegmentationModel

BRIGHT_HU = 150.0
BRIGHT_CLASS = 6  # "liver"


class ThresholdNet(nn.Module):
    """Logits that make every voxel above BRIGHT_HU class 6 and the rest background."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :1]
        others = torch.full_like(v, -1e4).expand(-1, NUM_CLASSES, -1, -1).clone()
        others[:, :1] = 0.0
        others[:, BRIGHT_CLASS : BRIGHT_CLASS + 1] = v - BRIGHT_HU
        return others


class _ModuleModel(SegmentationModel):
    name = "test"

    def __init__(self, input_size: int, net: nn.Module, context: int = 0):
        self.input_size = input_size
        self.context = context
        self.net = net.eval()

    def export_module(self) -> nn.Module:
        return self.net

    def predict_batch(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            probs = self.net(torch.from_numpy(np.asarray(x, np.float32))).softmax(1).numpy()
        return probs.argmax(1).astype(np.uint8), probs

    def fit(self, *args: Any, **kwargs: Any) -> dict:
        raise NotImplementedError

    def save(self, path: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, path: Path, device: str = "auto") -> SegmentationModel:
        raise NotImplementedError


@dataclass
class FakeBundle:
    """A `ModelBundle` stand-in around an in-memory model: no preprocessing plan, no saved
    clean-up, no mirroring (what a seed run of a 2D recipe carries)."""

    source: Path
    model_object: SegmentationModel
    member: str | None = None
    card: dict = field(default_factory=dict)
    store: dict = field(default_factory=dict)
    mirror_axes: tuple[int, ...] = ()
    lcc_organs: list[int] | None = None
    synthetic: bool = False

    @property
    def recipe(self) -> str:
        return self.model_object.name

    def model(self, device: str = "auto") -> SegmentationModel:
        return self.model_object

    def preprocessor(self) -> None:
        return None

    def open_backend(self, options, mirror: bool):
        from amoseg.inference.backends import backend_for_model

        backend = backend_for_model(self.model_object, options.device, options.precision)
        if not options.crop:
            backend.body_threshold = None
        return backend


class ThresholdModel(_ModuleModel):
    """Segments by HU threshold: the expected output is known voxel for voxel."""

    def __init__(self, input_size: int):
        super().__init__(input_size, ThresholdNet())


class TinyConvModel(_ModuleModel):
    """A random-weight 2.5D conv net with its normalisation inside, like real models."""

    def __init__(self, input_size: int, context: int = 1, seed: int = 0):
        torch.manual_seed(seed)
        channels = 1 + 2 * context
        net = nn.Sequential(
            _Window(),
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.Conv2d(8, NUM_CLASSES, 1),
        )
        with torch.no_grad():  # spread the classes: strong weights, no bias preference
            net[-1].weight.normal_(0.0, 2.0)
            net[-1].bias.zero_()
        super().__init__(input_size, net, context)


class _Window(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-200.0, 300.0) / 250.0


class NoNetworkModel(_ModuleModel):
    """A model without a torch module (like logistic regression): predict_batch only."""

    def __init__(self, input_size: int):
        super().__init__(input_size, ThresholdNet())

    def export_module(self) -> nn.Module:
        raise NotImplementedError


def make_tiny_store(root: Path, size: int = 32, air: int = 0) -> Path:
    """A 4-case CT slice store (2 train, 1 val, 1 test) of tissue with two organs, `size`²,
    framed by `air` pixels of air (−1000 HU) on each side → the store folder."""
    from tests.tiny_store import store_from_slices

    rng = np.random.default_rng(0)
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    frame = ((0, 0), (air, air), (air, air))
    cases = {}
    for i, split in enumerate(["train", "train", "val", "test"]):
        case = f"amos_{i + 1:04d}"
        image = rng.normal(-100, 40, (6, size, size))
        label = np.zeros((6, size, size), np.uint8)
        label[:, 8:20, 6:18] = 6
        image[label == 6] += 160
        label[:, 22:28, 20:26] = 1
        image[label == 1] += 90
        image = np.pad(image, frame, constant_values=-1000.0)
        label = np.pad(label, frame)
        cases[case] = (np.round(image).astype(np.int16), label)
        splits[split].append(case)
    return store_from_slices(root / "store", cases, splits, source="synthetic")


def make_tiny_run(root: Path, model: str = "unet", size: int = 32) -> Path:
    """Train a real registered model for one epoch on a tiny synthetic store → run folder."""
    from amoseg.training import TrainSettings, train

    store = make_tiny_store(root, size)
    run = root / f"run_{model}"
    settings = TrainSettings(
        epochs=1, batch_size=4, device="cpu", progress=False,
        hparams={"base": 4, "depth": 2, "augment": False} if model == "unet" else {},
    )  # fmt: skip
    train(model, store, run, settings)
    return run
