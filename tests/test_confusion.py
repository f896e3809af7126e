"""The confusion matrix and every 2D metric derived from it, on hand-computed tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from amoseg.metrics.confusion import (
    ConfusionMatrix,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_dice,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    present_classes,
    recall_per_class,
)

# 2x4 maps over classes 0..2 (class 3..15 absent everywhere):
#   truth: 0 0 1 1      pred: 0 1 1 1
#          2 2 0 0            2 0 0 2
TRUTH = np.array([[0, 0, 1, 1], [2, 2, 0, 0]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 0, 0, 2]], dtype=np.uint8)
# [t, p]: t=0 → p 0,1,0,2 ; t=1 → 1,1 ; t=2 → 2,0
HAND = np.zeros((16, 16), dtype=np.int64)
HAND[0, 0], HAND[0, 1], HAND[0, 2] = 2, 1, 1
HAND[1, 1] = 2
HAND[2, 2], HAND[2, 0] = 1, 1


def test_matrix_is_hand_counted():
    m = confusion_matrix(PRED, TRUTH)
    np.testing.assert_array_equal(m, HAND)
    assert m.dtype == np.int64 and m.sum() == TRUTH.size


def test_metrics_by_hand():
    m = HAND
    assert pixel_accuracy(m) == pytest.approx(5 / 8)
    # class 0: TP 2, FP 1 (t=2,p=0), FN 2 ; class 1: TP 2, FP 1, FN 0 ; class 2: TP 1, FP 1, FN 1
    iou = iou_per_class(m)
    np.testing.assert_allclose(iou[:3], [2 / 5, 2 / 3, 1 / 3])
    dice = dice_per_class(m)
    np.testing.assert_allclose(dice[:3], [4 / 7, 4 / 5, 2 / 4])
    np.testing.assert_allclose(precision_per_class(m)[:3], [2 / 3, 2 / 3, 1 / 2])
    np.testing.assert_allclose(recall_per_class(m)[:3], [2 / 4, 2 / 2, 1 / 2])
    # absent classes (3..15): NaN, excluded from every mean
    for arr in (iou, dice, precision_per_class(m), recall_per_class(m)):
        assert np.isnan(arr[3:]).all()
    assert present_classes(m).tolist() == [True, True, True] + [False] * 13
    assert mean_iou(m) == pytest.approx((2 / 5 + 2 / 3 + 1 / 3) / 3)
    assert mean_iou(m, organs_only=True) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert mean_dice(m) == pytest.approx((4 / 5 + 2 / 4) / 2)
    assert mean_dice(m, organs_only=False) == pytest.approx((4 / 7 + 4 / 5 + 2 / 4) / 3)


def test_false_positive_only_class_counts_as_zero_not_absent():
    truth = np.zeros((2, 2), dtype=np.uint8)
    pred = truth.copy()
    pred[0, 0] = 7  # organ 7 predicted but not in truth: IoU 0, included in the mean
    m = confusion_matrix(pred, truth)
    assert iou_per_class(m)[7] == 0 and dice_per_class(m)[7] == 0
    assert math.isnan(precision_per_class(m)[3]) and precision_per_class(m)[7] == 0
    assert math.isnan(recall_per_class(m)[7])  # no truth pixels: recall undefined
    assert mean_iou(m) == pytest.approx((3 / 4 + 0) / 2)
    assert mean_iou(m, organs_only=True) == 0.0


def test_empty_matrix_gives_nan_not_error():
    m = np.zeros((16, 16), dtype=np.int64)
    assert math.isnan(pixel_accuracy(m))
    assert math.isnan(mean_iou(m)) and math.isnan(mean_dice(m))


def test_only_background_has_no_organ_mean():
    m = confusion_matrix(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8))
    assert mean_iou(m) == 1.0
    assert math.isnan(mean_iou(m, organs_only=True)) and math.isnan(mean_dice(m))


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a,
        lambda a: a.astype(np.int64),
        lambda a: a.astype(np.uint16),  # AMOS ships uint16 label files
        lambda a: torch.from_numpy(a.astype(np.int64)),
        lambda a: torch.from_numpy(a).to(torch.uint8),
        lambda a: torch.from_numpy(a.astype(np.int32)),
        lambda a: np.ascontiguousarray(a[::-1, ::-1])[::-1, ::-1],  # negative strides
    ],
)
def test_numpy_torch_dtype_parity(convert):
    rng = np.random.default_rng(0)
    t = rng.integers(0, 16, (3, 17, 19)).astype(np.uint8)
    p = rng.integers(0, 16, (3, 17, 19)).astype(np.uint8)
    ref = np.bincount((t.astype(np.int64) * 16 + p).ravel(), minlength=256).reshape(16, 16)
    np.testing.assert_array_equal(confusion_matrix(convert(p), convert(t)), ref)


def test_read_only_arrays_are_accepted(recwarn):
    t = np.arange(16, dtype=np.uint8).reshape(4, 4)
    t.setflags(write=False)
    assert np.trace(confusion_matrix(t, t)) == 16
    assert not [w for w in recwarn if "writable" in str(w.message)]


def test_merge_across_batches_equals_one_big_update():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 16, (6, 8, 8))
    p = np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, 16, t.shape))
    big = ConfusionMatrix().update(p, t)
    streamed = ConfusionMatrix()
    for i in range(0, 6, 2):
        streamed.update(torch.from_numpy(p[i : i + 2]), torch.from_numpy(t[i : i + 2]))
    merged = ConfusionMatrix().update(p[:1], t[:1]).merge(ConfusionMatrix().update(p[1:], t[1:]))
    np.testing.assert_array_equal(streamed.matrix, big.matrix)
    np.testing.assert_array_equal(merged.matrix, big.matrix)
    assert big.matrix.sum() == t.size
    big.reset()
    assert big.matrix.sum() == 0


def test_more_than_16_classes_uses_wide_index():
    t = np.array([0, 19, 19, 5])
    p = np.array([0, 19, 3, 5])
    m = confusion_matrix(p, t, num_classes=20)
    assert m.shape == (20, 20) and m[19, 19] == 1 and m[19, 3] == 1 and np.trace(m) == 3


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (np.array([16]), np.array([0]), "outside 0..15"),
        (np.array([0]), np.array([-1]), "outside 0..15"),
        (np.array([0], dtype=np.uint16) + 300, np.array([0]), "outside 0..15"),
        (np.array([0.5]), np.array([0.0]), "non-integer"),
        (np.zeros((2, 3)), np.zeros((3, 2)), "shape"),
    ],
)
def test_bad_inputs_raise(pred, target, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(pred, target)


def test_bool_masks_count_as_classes_0_and_1():
    m = confusion_matrix(np.array([True, False, True]), np.array([True, True, False]), 2)
    np.testing.assert_array_equal(m, [[0, 1], [1, 1]])


def _report_like_matrix(fp_organs: int) -> np.ndarray:
    """95 % background, 5 % organs (equal sizes), 83.5 % accuracy, organs otherwise perfect.

    The most favourable case for mIoU: all 16.5 % wrong pixels are background predicted as
    an organ (3.3x the organs' whole area), dumped into the first `fp_organs` organs.
    """
    n = 1_500_000  # divisible by 15 * 1000
    m = np.zeros((16, 16), dtype=np.int64)
    m[0, 0] = int(0.95 * n)
    for c in range(1, 16):
        m[c, c] = int(0.05 * n) // 15
    wrong = int(0.165 * n)
    m[0, 0] -= wrong
    for c in range(1, fp_organs + 1):
        m[0, c] += wrong // fp_organs
    return m


def test_docs_arithmetic_accuracy_vs_miou():
    """docs/metrics.md: 83.5 % accuracy with 72.6 % mIoU needs >= 11 near-perfect organs."""
    spread = _report_like_matrix(15)  # false positives in proportion to organ size
    assert pixel_accuracy(spread) == pytest.approx(0.835)
    assert iou_per_class(spread)[0] == pytest.approx(0.785 / 0.95)
    assert iou_per_class(spread)[1] == pytest.approx(1 / 4.3)
    assert mean_iou(spread) == pytest.approx((0.785 / 0.95 + 15 / 4.3) / 16)  # 0.27
    assert mean_iou(_report_like_matrix(4)) > 0.726 > mean_iou(_report_like_matrix(5))
    # predicting background everywhere scores better accuracy than the report's U-Net
    all_bg = np.zeros((16, 16), dtype=np.int64)
    all_bg[:, 0] = np.diag(spread) + spread[0, 1:].sum() * np.eye(16)[0]
    assert pixel_accuracy(all_bg) == pytest.approx(0.95)
    assert mean_iou(all_bg) == pytest.approx(0.95 / 16)
