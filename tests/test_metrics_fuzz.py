"""Property tests (hypothesis): invariants every metric must keep on any pair of label maps."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from amoseg.metrics.confusion import (
    ConfusionMatrix,
    confusion_matrix,
    dice_per_class,
    iou_per_class,
    mean_dice,
    mean_iou,
    pixel_accuracy,
    precision_per_class,
    recall_per_class,
)
from amoseg.metrics.surface import volume_metrics

FAST = settings(max_examples=60, deadline=None)


@st.composite
def label_pairs(draw, min_dims=1, max_dims=3, max_side=7):
    """Two label maps of one shape; few classes so they overlap often, up to all 16."""
    shape = draw(array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1, max_side=max_side))
    top = draw(st.sampled_from([1, 2, 3, 15]))
    labels = st.integers(0, top)
    a = draw(arrays(np.uint8, shape, elements=labels))
    b = draw(arrays(np.uint8, shape, elements=labels))
    return a, b


@FAST
@given(label_pairs())
def test_matrix_counts_every_pixel_and_rates_are_bounded(pair):
    pred, gt = pair
    m = confusion_matrix(pred, gt)
    assert m.sum() == gt.size and (m >= 0).all()
    np.testing.assert_array_equal(m.sum(axis=1), np.bincount(gt.ravel(), minlength=16))
    np.testing.assert_array_equal(m.sum(axis=0), np.bincount(pred.ravel(), minlength=16))
    acc = pixel_accuracy(m)
    assert 0.0 <= acc <= 1.0 and acc == np.mean(pred == gt)
    iou, dice = iou_per_class(m), dice_per_class(m)
    both = np.isfinite(iou)
    np.testing.assert_array_equal(both, np.isfinite(dice))
    assert (iou[both] <= dice[both] + 1e-12).all()  # IoU <= Dice always
    np.testing.assert_allclose(dice[both], 2 * iou[both] / (1 + iou[both]))
    for arr in (iou, dice, precision_per_class(m), recall_per_class(m)):
        fin = arr[np.isfinite(arr)]
        assert ((fin >= 0) & (fin <= 1)).all()
    for mean in (mean_iou(m), mean_iou(m, organs_only=True), mean_dice(m)):
        assert math.isnan(mean) or 0.0 <= mean <= 1.0


@FAST
@given(label_pairs())
def test_dice_and_iou_are_symmetric(pair):
    a, b = pair
    m_ab, m_ba = confusion_matrix(a, b), confusion_matrix(b, a)
    np.testing.assert_array_equal(m_ab, m_ba.T)
    np.testing.assert_array_equal(dice_per_class(m_ab), dice_per_class(m_ba))
    np.testing.assert_array_equal(iou_per_class(m_ab), iou_per_class(m_ba))
    np.testing.assert_array_equal(precision_per_class(m_ab), recall_per_class(m_ba))


@FAST
@given(label_pairs())
def test_perfect_and_disjoint_predictions(pair):
    gt, _ = pair
    m = confusion_matrix(gt, gt)
    present = np.bincount(gt.ravel(), minlength=16) > 0
    assert pixel_accuracy(m) == 1.0
    assert (dice_per_class(m)[present] == 1).all() and np.isnan(dice_per_class(m)[~present]).all()
    assert mean_iou(m) == 1.0
    shifted = (gt + 1) % 16  # every pixel wrong: no class overlaps itself
    w = confusion_matrix(shifted, gt)
    assert pixel_accuracy(w) == 0.0
    d = dice_per_class(w)
    assert (d[np.isfinite(d)] == 0).all() and mean_iou(w) == 0.0


@FAST
@given(label_pairs(), st.integers(1, 4))
def test_streaming_in_chunks_equals_one_update(pair, chunks):
    pred, gt = pair
    cm = ConfusionMatrix()
    for p, g in zip(
        np.array_split(pred.ravel(), chunks), np.array_split(gt.ravel(), chunks), strict=True
    ):
        cm.update(p, g)
    np.testing.assert_array_equal(cm.matrix, confusion_matrix(pred, gt))


spacings = st.tuples(*[st.sampled_from([0.5, 0.8, 1.0, 2.0, 5.0])] * 3)


@settings(max_examples=40, deadline=None)
@given(label_pairs(min_dims=3, max_dims=3, max_side=6), spacings, st.sampled_from([0.0, 1.0, 2.0]))
def test_volume_metrics_invariants(pair, spacing, tol):
    a, b = pair
    classes = range(1, 4)
    ab = volume_metrics(a, b, spacing, tol, classes)
    ba = volume_metrics(b, a, spacing, tol, classes)
    same = volume_metrics(b, b, spacing, tol, classes)
    for c in classes:
        for key in ("dice", "iou", "nsd", "hd95"):  # all four are symmetric by definition
            x, y = ab[c][key], ba[c][key]
            assert (math.isnan(x) and math.isnan(y)) or x == y or abs(x - y) < 1e-9
        r = ab[c]
        if r["absent"]:
            assert math.isnan(r["dice"]) and math.isnan(r["hd95"])
            continue
        assert 0 <= r["iou"] <= r["dice"] <= 1 and 0 <= r["nsd"] <= 1 and r["hd95"] >= 0
        if r["gt_voxels"] == 0 or r["pred_voxels"] == 0:
            assert (r["dice"], r["nsd"], r["hd95"]) == (0, 0, math.inf)
        if not ((a == c) & (b == c)).any():
            assert r["dice"] == 0  # disjoint masks
        if not same[c]["absent"]:
            p = same[c]
            assert (p["dice"], p["iou"], p["nsd"], p["hd95"]) == (1, 1, 1, 0)
