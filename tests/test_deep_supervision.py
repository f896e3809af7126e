"""Deep supervision as nnU-Net: heads at their own resolution, targets downsampled (nearest),
weights 1/2^k with the lowest-resolution output at 0; exported modules give one full-size
output."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amoseg.labels import NUM_CLASSES
from amoseg.models.registry import create_model
from amoseg.ops.losses import (
    deep_supervision_loss,
    deep_supervision_weights,
    downsample_labels,
)


def test_weights_are_nnunets():
    assert deep_supervision_weights(1) == [1.0]
    # 4 decoder outputs: 1, 1/2, 1/4, 0 (lowest resolution) over their sum 1.75
    assert deep_supervision_weights(4) == pytest.approx([1 / 1.75, 0.5 / 1.75, 0.25 / 1.75, 0])


def test_loss_is_the_hand_computed_weighted_sum():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 4, (2, 8, 8), generator=g)
    outs = [torch.randn(2, 4, n, n, generator=g) for n in (8, 4, 2, 1)]
    # nearest-exact 8 → 4 samples rows/cols 1, 3, 5, 7; 8 → 2 samples 2, 6; 8 → 1 samples 4
    assert torch.equal(downsample_labels(target, (4, 4)), target[:, 1::2, 1::2])
    assert torch.equal(downsample_labels(target, (2, 2)), target[:, 2::4, 2::4])
    ce = F.cross_entropy
    expected = (
        1.0 * ce(outs[0], target)
        + 0.5 * ce(outs[1], target[:, 1::2, 1::2])
        + 0.25 * ce(outs[2], target[:, 2::4, 2::4])
    ) / 1.75  # the 1×1 output weighs 0
    got = deep_supervision_loss(ce, outs, target, deep_supervision_weights(4))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_zero_weight_head_still_takes_part_in_the_graph():
    out = torch.randn(1, 4, 2, 2, requires_grad=True)
    full = torch.randn(1, 4, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    deep_supervision_loss(F.cross_entropy, [full, out], target, [1.0, 0.0]).backward()
    assert out.grad is not None and torch.count_nonzero(out.grad) == 0


@pytest.mark.parametrize(
    ("name", "hparams", "x", "shapes"),
    [
        ("unet", {"base": 4, "depth": 3, "deep_supervision": True}, (2, 3, 32, 32),
         [(32, 32), (16, 16)]),
        ("unet3d", {"base": 4, "stages": 4, "patch": [8, 16, 16]}, (2, 1, 8, 16, 16),
         [(8, 16, 16), (4, 8, 8), (4, 4, 4)]),  # z stops halving at 4 (stage_strides)
    ],
)  # fmt: skip
def test_training_heads_stay_small_and_exports_give_full_size(name, hparams, x, shapes):
    model = create_model(name, **hparams)
    model.net.train()
    inputs = torch.randn(*x) * 100
    outs = model.net(inputs)
    assert [tuple(o.shape[2:]) for o in outs] == shapes
    target = torch.randint(0, NUM_CLASSES, (x[0], *x[2:]))
    loss = model.loss(outs, target)
    assert torch.isfinite(loss)
    # a hand sum over the same heads with nnU-Net's weights (unet3d's last head weighs 0)
    weights = deep_supervision_weights(len(outs) + (name == "unet"))  # unet: no 0-weight head
    hand = sum(
        w * model._loss(o, downsample_labels(target, o.shape[2:]))
        for w, o in zip(weights, outs, strict=False)
    )
    assert loss.detach().item() == pytest.approx(float(hand.detach()), rel=1e-5)
    exported = model.export_module()
    with torch.no_grad():
        full = exported(inputs)
    assert isinstance(full, torch.Tensor) and full.shape == (x[0], NUM_CLASSES, *x[2:])
    model.net.eval()
    assert isinstance(model.net(inputs), torch.Tensor)


def test_unet_trains_with_deep_supervision(tmp_path):
    from amoseg.training import TrainSettings, train
    from tests.tiny_store import make_tiny_store

    store = make_tiny_store(tmp_path / "store")
    losses: list[float] = []
    hparams = {"base": 8, "depth": 3, "deep_supervision": True}
    settings = TrainSettings(epochs=3, device="cpu", progress=False, hparams=hparams,
                             batch_size=4, lr=1e-2, precision="fp32")  # fmt: skip
    train("unet", store, tmp_path / "run", settings,
          on_epoch=lambda e, m: losses.append(m["train_loss"]))  # fmt: skip
    assert losses[-1] < losses[0], losses
