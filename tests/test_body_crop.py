"""Body crops are the same in training, validation/evaluation and `predict`
(amoseg.preprocessing.crop)."""

from __future__ import annotations

import pytest
import torch

from amoseg.models.networks import UNet2d
from amoseg.models.registry import create_model
from amoseg.models.unet import UNetModern
from amoseg.preprocessing.crop import body_box, crop_batch, predict_in_box
from tests.predict_models import make_tiny_store


def _body_batch(size: int, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, S, S) int16 air with a body in the middle third; labels mark one organ."""
    x = torch.full((batch, 3, size, size), -1000, dtype=torch.int16)
    lo, hi = size // 3, 2 * size // 3
    x[..., lo:hi, lo:hi] = 40
    y = torch.zeros((batch, size, size), dtype=torch.uint8)
    y[:, lo + 2 : lo + 6, lo + 3 : lo + 9] = 6
    return x, y


@pytest.mark.parametrize(("size", "step"), [(640, 64), (64, 16)])
def test_crop_batch_cuts_inputs_and_labels_to_one_box(size, step):
    x, y = _body_batch(size)
    xc, yc = crop_batch(x, y, -500.0, 16)
    assert xc.shape[-2:] == yc.shape[-2:]
    assert xc.shape[-1] < size and xc.shape[-2] % step == 0 and xc.shape[-1] % step == 0
    rows, cols = body_box(x.flatten(0, 1), -500.0, step)
    torch.testing.assert_close(xc, x[..., rows, cols])
    assert (yc == 6).sum() == (y == 6).sum(), "the organ must stay inside the crop"
    assert torch.equal(yc, y[..., rows, cols])


def test_crop_batch_leaves_a_slice_filled_by_the_body():
    x = torch.zeros((2, 3, 64, 64), dtype=torch.int16)
    y = torch.ones((2, 64, 64), dtype=torch.uint8)
    xc, yc = crop_batch(x, y, -500.0, 16)
    assert xc is x and yc is y


def test_predict_in_box_is_background_outside_the_box():
    x = torch.randn(3, 1, 32, 32)
    box = (slice(8, 24), slice(4, 20))
    seen = []

    def predict(t):
        seen.append(tuple(t.shape))
        return torch.full((t.shape[0], *t.shape[-2:]), 5, dtype=torch.uint8)

    out = predict_in_box(predict, x, box)
    assert seen == [(3, 1, 16, 16)] and out.shape == (3, 32, 32)
    assert (out[:, box[0], box[1]] == 5).all() and out.sum() == 5 * 3 * 16 * 16
    assert predict_in_box(predict, x, None).shape == (3, 32, 32)


def test_unet_crops_only_with_a_ct_window_and_body_crop_on():
    assert create_model("unet").body_threshold == -500.0
    assert create_model("unet", body_crop=False).body_threshold is None
    assert create_model("unet", norm="zscore").body_threshold is None
    assert create_model("unet-seed").body_threshold is None
    assert create_model("unet", depth=3).size_multiple == 8


def test_runs_saved_before_body_crops_keep_scoring_whole_slices():
    payload = create_model("unet", base=4, depth=2).checkpoint_payload()
    payload["hparams"].pop("body_crop")  # as written by amoseg before body crops existed
    assert UNetModern.from_checkpoint(payload, device="cpu").body_threshold is None


@pytest.mark.parametrize("body_crop", [True, False])
def test_training_and_validation_see_the_box_predict_will_score(tmp_path, monkeypatch, body_crop):
    from amoseg.training import TrainSettings, train

    shapes: list[tuple[int, int]] = []
    forward = UNet2d.forward

    def recording(self, x):
        if x.device.type != "meta":  # the memory estimate's dry run is no batch the net sees
            shapes.append(tuple(x.shape[-2:]))
        return forward(self, x)

    monkeypatch.setattr(UNet2d, "forward", recording)
    store = make_tiny_store(tmp_path, size=32, air=16)  # 64² slices, the body in the middle
    settings = TrainSettings(
        epochs=1, batch_size=4, device="cpu", progress=False,
        hparams={"base": 4, "depth": 2, "augment": False, "body_crop": body_crop},
    )  # fmt: skip
    train("unet", store, tmp_path / "run", settings)
    if body_crop:
        # train batches and the val volume: the body box plus margin, never the whole frame
        assert shapes and all(h < 64 and w < 64 for h, w in shapes)
        assert all(h % 4 == 0 and w % 4 == 0 for h, w in shapes)
    else:
        assert set(shapes) == {(64, 64)}
