"""`resized_argmax`: the arg-max of bilinearly resized scores, computed only at the pixels
whose 2×2 sources disagree, against resizing every channel (`resize_inplane`) then arg-max."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from amoseg.preprocessing.resample import resize_inplane, resized_argmax


def organ_scores(shape: tuple[int, int, int], classes: int = 16, seed: int = 0) -> torch.Tensor:
    """(C, Z, X, Y) logits shaped like a network's: smooth blobs of each class, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    z, x, y = shape
    coarse = torch.randn(z, classes, max(2, x // 6), max(2, y // 6), generator=gen) * 4
    smooth = F.interpolate(coarse, size=(x, y), mode="bicubic", align_corners=False)
    noisy = smooth + 0.3 * torch.randn(z, classes, x, y, generator=gen)
    return noisy.permute(1, 0, 2, 3).contiguous()


@pytest.mark.parametrize(
    ("low", "target"),
    [((24, 20), (180, 150)), ((24, 20), (24, 20)), ((30, 18), (20, 40)), ((7, 9), (64, 5))],
)
def test_matches_resizing_every_channel(low, target):
    scores = organ_scores((5, *low))
    expected = resize_inplane(scores, target, label=False).argmax(0).to(torch.uint8)
    got = resized_argmax(scores, target)
    assert got.shape == expected.shape and got.dtype == torch.uint8
    # float rounding may only flip a pixel whose two best classes tie to the last bits
    differs = (got != expected).sum().item()
    assert differs <= max(1, expected.numel() // 100_000)


def test_borders_are_interpolated_and_interiors_copied():
    # two classes split down the middle: every output pixel away from the border is copied,
    # and the border moves where the interpolated scores cross, not on the coarse grid
    scores = torch.zeros(2, 1, 4, 4)
    scores[0, :, :, :2] = 1.0
    scores[1, :, :, 2:] = 1.0
    scores[1, :, :, 1] = 0.9  # class 1 nearly wins at column 1: the border shifts left
    got = resized_argmax(scores, (16, 16))
    expected = resize_inplane(scores, (16, 16), label=False).argmax(0).to(torch.uint8)
    assert torch.equal(got, expected)
    row = got[0, 0].tolist()
    assert row[0] == 0 and row[-1] == 1 and 0 < row.index(1) < 8


def test_the_label_inverse_matches_the_probability_inverse():
    # a prediction on a grid coarser than the scan (as 3d_lowres's): the label inverse
    # (chunked, `resized_argmax`) gives the arg-max of the full probability inverse
    from amoseg.preprocessing.preprocessor import Preprocessor
    from tests.test_preprocessing import AFFINES, phantom

    image, label = (a.repeat(3, 0).repeat(3, 1).repeat(2, 2) for a in phantom())
    pre = Preprocessor(spacing=(2.4, 2.1, 5.0))
    out = pre.forward(image, AFFINES["LAS"], label)
    scores = organ_scores(tuple(out.image.shape), seed=3).softmax(0)
    labels = pre.invert_labels(scores, out.record, chunk=4)
    expected = pre.invert(scores, out.record).argmax(0).to(torch.uint8)
    assert labels.shape == label.shape
    assert (labels != expected).float().mean().item() < 1e-4
