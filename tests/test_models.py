"""The model ladder: registry, shapes, exact logistic regression, prior, export, augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from amoseg.errors import AmosegError
from amoseg.labels import NUM_CLASSES
from amoseg.models.registry import LADDER, MODEL_NAMES, create_model, load_model
from amoseg.ops.augment import augment_batch
from amoseg.ops.inferers import model_labels
from amoseg.ops.losses import inverse_frequency_weights

SMALL = {
    "mlp": {"work_size": 16, "hidden": [8]},
    "unet-seed": {"base": 4, "depth": 2},
    "unet": {"base": 4, "depth": 2},
}


def small(name: str, size: int = 32):
    return create_model(name, input_size=size, **SMALL.get(name, {}))


def test_registry_names_and_errors():
    assert MODEL_NAMES == (
        "prior",
        "logreg-pixel",
        "logreg-3x3",
        "logreg-5x5",
        "mlp",
        "unet-seed",
        "unet",
        "unet3d",
    )
    assert MODEL_NAMES[: len(LADDER)] == LADDER
    with pytest.raises(AmosegError, match=r"unknown model 'resnet'.*unet-seed"):
        create_model("resnet")
    with pytest.raises(AmosegError, match="unknown hyper-parameter"):
        create_model("unet", wings=2)


@pytest.mark.parametrize("name", LADDER)  # the slice models' contract; unet3d: test_unet3d.py
def test_predict_shapes_and_export(name, tmp_path):
    torch.manual_seed(0)
    model = small(name)
    if name == "prior":
        model.count(np.random.default_rng(0).integers(0, 4, (5, 32, 32)))
    c = 1 + 2 * model.context
    x = np.random.default_rng(1).normal(0, 300, (3, c, 32, 32)).astype(np.float32)
    labels, probs = model.predict_batch(x)
    assert labels.shape == (3, 32, 32) and labels.dtype == np.uint8
    assert probs.shape == (3, NUM_CLASSES, 32, 32) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert np.array_equal(labels, probs.argmax(1))
    # the export module maps raw intensities to logits with the normaliser inside
    logits = model.export_module()(torch.from_numpy(x)).detach()
    assert logits.shape == (3, NUM_CLASSES, 32, 32)
    assert np.array_equal(logits.argmax(1).numpy(), labels)
    # save → load reproduces the predictions exactly
    model.save(tmp_path / "m.pt")
    again = load_model(tmp_path / "m.pt", device="cpu")
    assert again.name == name and again.input_size == 32 and again.context == model.context
    np.testing.assert_array_equal(again.predict_batch(x)[1], probs)
    vol = x[:, 0]
    np.testing.assert_array_equal(model_labels(again, vol, 2), model_labels(model, vol, 3))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_logreg_is_multinomial_logistic_regression_on_patches(k):
    """softmax(conv_k×k(x)) == softmax(W · zero-padded patch + b) for every pixel."""
    name = {1: "logreg-pixel", 3: "logreg-3x3", 5: "logreg-5x5"}[k]
    torch.manual_seed(0)
    model = create_model(name, input_size=8)
    x = torch.randn(2, 1, 8, 8) * 400
    xn = model.net.norm(x)
    patches = F.unfold(xn, k, padding=k // 2).transpose(1, 2)  # (B, 64, k*k) zero-padded
    conv = model.net.core.conv
    manual = patches @ conv.weight.view(NUM_CLASSES, -1).T + conv.bias
    manual = manual.transpose(1, 2).reshape(2, NUM_CLASSES, 8, 8).softmax(1)
    _, probs = model.predict_batch(x.numpy())
    np.testing.assert_allclose(probs, manual.detach().numpy(), atol=1e-6)
    assert model.n_params == NUM_CLASSES * (k * k + 1)


def test_mlp_is_dense_only_with_report_size_by_default():
    model = create_model("mlp", input_size=640)
    kinds = {type(m).__name__ for m in model.net.modules()}
    assert not any("Conv" in k for k in kinds)
    first = model.net.core.mlp[0]
    assert first.in_features == 220 * 220 == 48_400
    assert model.net.core.mlp[-1].out_features == 220 * 220 * NUM_CLASSES


def test_prior_predicts_per_position_majority():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (9, 6, 6))
    model = create_model("prior", input_size=6)
    model.count(labels)
    counts = np.stack([(labels == c).sum(0) for c in range(NUM_CLASSES)])
    pred, probs = model.predict_batch(np.zeros((1, 1, 6, 6), np.float32))
    np.testing.assert_array_equal(pred[0], counts.argmax(0))
    np.testing.assert_allclose(probs[0], (counts + 1) / (counts + 1).sum(0), rtol=1e-5)


def test_unet_seed_scales_by_max_abs_and_unet_windows():
    seed, modern = small("unet-seed"), small("unet")
    x = torch.tensor([[-3000.0, 1500.0], [0.0, 600.0]]).view(1, 1, 2, 2)
    assert torch.allclose(seed.net.norm(x), x / 3000)
    mod = modern.net.norm(x.expand(1, 3, 2, 2))
    assert mod.min() == -1 and mod.max() == 1  # clipped to [-1000, 1000] HU → [-1, 1]


def test_inverse_frequency_weights():
    w = inverse_frequency_weights(np.array([900, 90, 10, 0] + [0] * 12))
    assert w[3] == 0 and w[0] < w[1] < w[2]
    assert w[1] / w[0] == pytest.approx(10) and w[2] / w[1] == pytest.approx(9)


def test_augment_is_seeded_keeps_labels_and_never_mirrors():
    x = torch.zeros(8, 1, 32, 32)
    y = torch.zeros(8, 32, 32, dtype=torch.long)
    x[:, :, 10:20, 2:10] = 1.0  # an "organ" on the image's left side
    y[:, 10:20, 2:10] = 3
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    xa, ya = augment_batch(x, y, g1)
    xb, yb = augment_batch(x, y, g2)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert set(ya.unique().tolist()) <= {0, 3}
    cols = torch.nonzero(ya == 3)[:, 2].float()
    assert cols.mean() < 16  # still on the left half: no left/right flip


def test_unet_exports_to_onnx_opset17(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = small("unet").export_module()
    x = torch.randn(2, 3, 32, 32) * 500
    path = tmp_path / "unet.onnx"
    torch.onnx.export(
        module,
        (x,),
        str(path),
        opset_version=17,
        input_names=["x"],
        output_names=["logits"],
        dynamo=False,
    )
    got = ort.InferenceSession(str(path)).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, module(x).detach().numpy(), atol=1e-4)
