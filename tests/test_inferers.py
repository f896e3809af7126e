"""The one inferer protocol (slices with context, sliding windows), the scan-grid probabilities
predict and ensembles build on, the generated model registry, and the models ↔ training
layering."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from amoseg.inference.backends import backend_for_model
from amoseg.inference.predict import scan_probabilities, segment_scan
from amoseg.labels import NUM_CLASSES
from amoseg.models import registry
from amoseg.models.base import SegmentationModel
from amoseg.ops.inferers import (
    SliceInferer,
    SlidingWindowInferer,
    label_volume,
    model_labels,
)
from tests.predict_models import TinyConvModel

PACKAGE = Path(__file__).resolve().parents[1] / "amoseg"


def test_slice_inferer_stacks_context_with_edges_repeated_in_any_batch_size():
    volume = torch.arange(5, dtype=torch.float32)[:, None, None].expand(5, 3, 4).clone()
    seen: list[torch.Tensor] = []

    def predictor(x: torch.Tensor) -> torch.Tensor:
        seen.append(x[:, :, 0, 0].clone())
        return x[:, :1].expand(-1, NUM_CLASSES, -1, -1) * torch.arange(NUM_CLASSES)[:, None, None]

    scores = SliceInferer(context=1, batch_size=2)(volume, predictor)
    assert scores.shape == (5, NUM_CLASSES, 3, 4)
    assert torch.cat(seen).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 4]]
    again = SliceInferer(context=1, batch_size=5)(volume, predictor)
    assert torch.equal(scores, again)


def test_slice_inferer_scores_only_the_body_box_and_calls_the_rest_background():
    model = TinyConvModel(32, context=1)
    rng = np.random.default_rng(0)
    volume = np.full((4, 32, 32), -1000.0, np.float32)
    volume[:, 8:24, 10:26] = rng.normal(50, 100, (4, 16, 16))
    predictor = backend_for_model(model, "cpu", "fp32").scores
    box_inferer = SliceInferer(1, 3, body_threshold=-500.0, size_multiple=4)
    box = box_inferer.box(torch.from_numpy(volume))
    assert box is not None
    labels = label_volume(box_inferer, volume, predictor)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[box[0], box[1]] = False
    assert (labels[:, outside] == 0).all()
    framed = box_inferer(volume, predictor)  # full-frame scores: background outside the box
    assert torch.equal(framed.argmax(1).to(torch.uint8), labels)


@pytest.mark.parametrize("shape", [(12, 20, 18), (5, 9, 40)])
def test_sliding_window_blends_overlapping_patches_back_to_the_pointwise_answer(shape):
    """For a pointwise predictor every patch agrees, so Gaussian blending (normalised weights)
    must give the pointwise scores exactly — also where patches are padded or overlap."""
    volume = torch.randn(shape) * 100

    def predictor(x: torch.Tensor) -> torch.Tensor:  # (B, 1, d, h, w) → (B, K, d, h, w)
        k = torch.arange(NUM_CLASSES, dtype=torch.float32).view(1, -1, 1, 1, 1)
        return x * (k - 7.5) / 100 + k.sin()

    inferer = SlidingWindowInferer((8, 8, 8), batch_size=3, overlap=0.5)
    scores = inferer(volume, predictor)
    expected = predictor(volume[None, None])[0].transpose(0, 1)
    assert scores.shape == (shape[0], NUM_CLASSES, *shape[1:])
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-4)


def test_scan_probabilities_are_the_scan_grid_distribution_behind_segment_scan():
    rng = np.random.default_rng(1)
    data = np.round(rng.normal(40, 150, (48, 40, 6))).astype(np.int16)  # finer than S=24
    affine = np.diag([-0.8, 0.8, 2.5, 1.0])  # LAS: predict reorients and back
    backend = backend_for_model(TinyConvModel(24, context=1), "cpu", "fp32")
    probs = scan_probabilities(backend, data, affine)
    assert probs.shape == (NUM_CLASSES, *data.shape) and probs.dtype == torch.float32
    torch.testing.assert_close(probs.sum(0), torch.ones(data.shape), atol=1e-5, rtol=0)
    labels = segment_scan(backend, data, affine)
    assert (probs.argmax(0).numpy() == labels).mean() > 0.999  # ties aside, the same arg-max
    # an ensemble of the same model twice is that model
    twice = scan_probabilities([backend, backend], data, affine)
    torch.testing.assert_close(twice, probs)
    assert np.array_equal(segment_scan([backend, backend], data, affine), probs.argmax(0).numpy())


def test_model_labels_run_the_models_predictor_through_its_inferer():
    model = TinyConvModel(16, context=1)
    volume = np.random.default_rng(2).normal(0, 200, (5, 16, 16)).astype(np.float32)
    labels = model_labels(model, volume, batch_size=2)
    x = np.stack([volume[np.clip([z - 1, z, z + 1], 0, 4)] for z in range(5)])
    assert np.array_equal(labels, model.predict_batch(x)[0])


def test_registry_is_generated_from_the_decorated_classes():
    import importlib
    import pkgutil

    classes = set()
    for info in pkgutil.iter_modules([str(PACKAGE / "models")]):
        module = importlib.import_module(f"amoseg.models.{info.name}")
        for value in vars(module).values():
            ours = isinstance(value, type) and value.__module__ == module.__name__
            if ours and issubclass(value, SegmentationModel) and "name" in vars(value):
                classes.add(value)
    assert {c.name for c in classes} == set(registry.model_names())
    assert registry.model_names()[0] == "prior" and registry.DEFAULT_MODEL in registry.MODEL_NAMES

    class Extra(SegmentationModel):
        name = "unet"  # taken

    with pytest.raises(TypeError, match="taken"):
        registry.register_model(Extra)


def _amoseg_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("amoseg"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("amoseg"))
    return found


def test_no_import_circle_between_models_and_the_training_loop():
    """Models supply hooks; the trainer drives them. No model module imports the trainer or the
    DDP plumbing (not even lazily), and those import no model family."""
    loop = {"amoseg.training.trainer", "amoseg.training.distributed", "amoseg.training.train"}
    for path in (PACKAGE / "models").glob("*.py"):
        assert not _amoseg_imports(path) & loop, path.name
    for name in ("trainer.py", "distributed.py"):
        imports = _amoseg_imports(PACKAGE / "training" / name)
        families = {m for m in imports if m.startswith("amoseg.models.")}
        assert all(m.startswith("amoseg.models.checkpoint") for m in families), (name, families)
