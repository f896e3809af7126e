"""Per-volume 3D metrics: hand-computed cases, brute force, and MONAI on random and real labels."""

from __future__ import annotations

import math
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from amoseg.metrics.confusion import confusion_matrix, dice_per_class, iou_per_class
from amoseg.metrics.surface import (
    hausdorff95,
    mask_surface,
    normalized_surface_dice,
    surface_distances,
    volume_metrics,
)


def _cube(shape, lo, hi):
    m = np.zeros(shape, dtype=np.uint8)
    m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = 1
    return m


def test_surface_of_a_cube_is_all_but_its_centre():
    cube = _cube((5, 5, 5), (1, 1, 1), (4, 4, 4)).astype(bool)
    surf = mask_surface(cube)
    assert surf.sum() == 26 and not surf[2, 2, 2]
    # a mask touching the image border has its border voxels on the surface
    full = np.ones((3, 3, 3), dtype=bool)
    assert mask_surface(full).sum() == 26


def test_two_voxels_by_hand():
    """GT one voxel, prediction that voxel plus one 2 mm away (spacing 1 mm)."""
    gt = np.zeros((5, 5, 7), dtype=np.uint8)
    gt[2, 2, 2] = 1
    pred = gt.copy()
    pred[2, 2, 4] = 1
    r = volume_metrics(pred, gt, (1.0, 1.0, 1.0), tolerance_mm=1.0, classes=[1])[1]
    assert r["dice"] == pytest.approx(2 / 3) and r["iou"] == pytest.approx(1 / 2)
    assert r["nsd"] == pytest.approx(2 / 3)  # (1 of 2 pred voxels + 1 of 1 GT voxel) / 3
    assert r["hd95"] == pytest.approx(1.9)  # 95th percentile of [0, 2], linear interpolation
    assert r["gt_voxels"] == 1 and r["pred_voxels"] == 2 and r["absent"] == 0
    r2 = volume_metrics(pred, gt, (1.0, 1.0, 1.0), tolerance_mm=2.0, classes=[1])[1]
    assert r2["nsd"] == 1.0  # the tolerance is inclusive (d <= tau), as in MONAI


def test_anisotropic_cube_shift_by_hand():
    """3x3x3 cube shifted one slice along z with 5 mm slices (see docs/metrics.md)."""
    gt = _cube((5, 5, 7), (1, 1, 2), (4, 4, 5))
    pred = _cube((5, 5, 7), (1, 1, 3), (4, 4, 6))
    d_pg, d_gp = surface_distances(pred.astype(bool), gt.astype(bool), (1.0, 1.0, 5.0))
    # 26 surface voxels each: 16 on the other surface, 1 interior centre 1 mm away, 9 at 5 mm
    for d in (d_pg, d_gp):
        np.testing.assert_allclose(np.sort(d), [0.0] * 16 + [1.0] + [5.0] * 9)
    r = volume_metrics(pred, gt, (1.0, 1.0, 5.0), tolerance_mm=2.0, classes=[1])[1]
    assert r["dice"] == pytest.approx(2 * 18 / 54)
    assert r["nsd"] == pytest.approx(34 / 52)
    assert r["hd95"] == pytest.approx(5.0)
    # 2D-style spacing order matters: the same shift along x at 1 mm is within tolerance
    r_iso = volume_metrics(pred, gt, (5.0, 5.0, 1.0), tolerance_mm=2.0, classes=[1])[1]
    assert r_iso["nsd"] == 1.0 and r_iso["hd95"] == pytest.approx(1.0)


def test_distant_voxels_exact_distance():
    gt = np.zeros((4, 4, 9), dtype=np.uint8)
    pred = gt.copy()
    gt[1, 1, 1] = 1
    pred[2, 3, 7] = 1  # offset (1, 2, 6) voxels at spacing (0.5, 0.8, 2.5) mm
    expected = math.sqrt(0.5**2 + 1.6**2 + 15.0**2)
    r = volume_metrics(pred, gt, (0.5, 0.8, 2.5), tolerance_mm=2.0, classes=[1])[1]
    assert r["hd95"] == pytest.approx(expected) and r["nsd"] == 0.0 and r["dice"] == 0.0


def test_distance_equal_to_tolerance_counts_despite_rounding():
    """sqrt(1.6² + 1.2²) is 2 mm exactly but not in floating point: still within 2 mm."""
    gt = np.zeros((3, 5, 5), dtype=np.uint8)
    pred = gt.copy()
    gt[1, 1, 1] = 1
    pred[1, 3, 3] = 1
    r = volume_metrics(pred, gt, (1.0, 0.8, 0.6), tolerance_mm=2.0, classes=[1])[1]
    assert r["hd95"] == pytest.approx(2.0) and r["nsd"] == 1.0


def test_empty_mask_rules():
    shape = (6, 6, 6)
    empty = np.zeros(shape, dtype=np.uint8)
    cube = _cube(shape, (1, 1, 1), (4, 4, 4))
    both = volume_metrics(empty, empty, (1, 1, 1), classes=[1])[1]
    assert both["absent"] == 1.0
    assert all(math.isnan(both[k]) for k in ("dice", "iou", "nsd", "hd95"))
    for pred, gt in ((cube, empty), (empty, cube)):
        r = volume_metrics(pred, gt, (1, 1, 1), classes=[1])[1]
        assert r["absent"] == 0.0
        assert (r["dice"], r["iou"], r["nsd"], r["hd95"]) == (0.0, 0.0, 0.0, math.inf)
    perfect = volume_metrics(cube, cube, (1, 1, 1), classes=[1])[1]
    assert (perfect["dice"], perfect["iou"], perfect["nsd"], perfect["hd95"]) == (1, 1, 1, 0)
    assert math.isnan(normalized_surface_dice(np.array([]), np.array([]), 2.0))
    assert hausdorff95(np.array([]), np.array([1.0])) == math.inf
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(cube.astype(bool), empty.astype(bool), (1, 1, 1))


def test_background_class_uses_the_whole_volume():
    gt = _cube((6, 6, 6), (1, 1, 1), (4, 4, 4))
    r = volume_metrics(gt, gt, (1, 1, 1), classes=[0, 1])
    assert r[0]["dice"] == 1.0 and r[0]["hd95"] == 0.0 and r[1]["nsd"] == 1.0


def test_argument_checks():
    a = np.zeros((3, 3, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="shape"):
        volume_metrics(a, a[:2], (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        volume_metrics(a, a, (1, 1))
    with pytest.raises(ValueError, match="tolerance"):
        volume_metrics(a, a, (1, 1, 1), tolerance_mm=-1)


def _random_labels(rng, shape, n_classes, sigma=2.0):
    """Blob-shaped label maps: argmax of smoothed noise, some classes zeroed to background."""
    noise = ndimage.gaussian_filter(rng.random((n_classes, *shape)), (0, sigma, sigma, sigma))
    lab = noise.argmax(axis=0).astype(np.uint8)
    lab[rng.random(shape) < 0.02] = rng.integers(0, n_classes)  # speckles: far-away islands
    return lab


def test_crop_is_exact_against_brute_force():
    """Crop + k-d tree == all-pairs distances between surfaces on the full uncropped grid."""
    rng = np.random.default_rng(3)
    spacing = (0.7, 1.3, 3.0)
    for _ in range(3):
        gt = _random_labels(rng, (14, 12, 8), 4)
        pred = _random_labels(rng, (14, 12, 8), 4)
        for c in (1, 2, 3):
            g, p = gt == c, pred == c
            if not g.any() or not p.any():
                continue
            d_pg, d_gp = surface_distances(p, g, spacing)
            pg = np.argwhere(mask_surface(p)) * spacing
            gg = np.argwhere(mask_surface(g)) * spacing
            pair = cdist(pg, gg)
            np.testing.assert_allclose(np.sort(d_pg), np.sort(pair.min(axis=1)), atol=1e-9)
            np.testing.assert_allclose(np.sort(d_gp), np.sort(pair.min(axis=0)), atol=1e-9)


# --- MONAI cross-checks ---------------------------------------------------------------------


def _monai(pred: np.ndarray, gt: np.ndarray, spacing, classes, tol):
    """MONAI's Dice, IoU, NSD and HD95 per class (one-hot over the given classes)."""
    from monai.metrics import (
        compute_dice,
        compute_hausdorff_distance,
        compute_iou,
        compute_surface_dice,
    )

    def onehot(a):
        chans = [np.zeros_like(a, dtype=bool)] + [a == c for c in classes]
        return torch.from_numpy(np.stack(chans)[None].astype(np.float32))

    p, g = onehot(pred), onehot(gt)
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = compute_dice(p, g, include_background=False, ignore_empty=False)[0]
        iou = compute_iou(p, g, include_background=False, ignore_empty=False)[0]
        nsd = compute_surface_dice(p, g, [tol] * len(classes), spacing=sp)[0]
        hd = compute_hausdorff_distance(p, g, percentile=95, spacing=sp)[0]
    return {
        c: {
            "dice": float(dice[i]),
            "iou": float(iou[i]),
            "nsd": float(nsd[i]),
            "hd95": float(hd[i]),
        }
        for i, c in enumerate(classes)
    }


def _compare(pred, gt, spacing, classes, tol=2.0):
    ours = volume_metrics(pred, gt, spacing, tol, classes)
    ref = _monai(pred, gt, spacing, classes, tol)
    m = confusion_matrix(pred, gt)
    checked = 0
    for c in classes:
        o, r = ours[c], ref[c]
        if o["absent"]:
            continue  # MONAI: Dice 1 (ignore_empty=False) / NaN; ours: absent (docs)
        assert o["dice"] == pytest.approx(r["dice"], abs=1e-6), c
        assert o["iou"] == pytest.approx(r["iou"], abs=1e-6), c
        assert o["dice"] == pytest.approx(dice_per_class(m)[c], abs=1e-12)
        assert o["iou"] == pytest.approx(iou_per_class(m)[c], abs=1e-12)
        assert o["nsd"] == pytest.approx(r["nsd"], abs=1e-3), c
        if o["gt_voxels"] and o["pred_voxels"]:
            assert o["hd95"] == pytest.approx(r["hd95"], abs=1e-3), c
            checked += 1
        else:  # one empty: MONAI gives NaN, we give inf (docs/metrics.md)
            assert o["hd95"] == math.inf and math.isnan(r["hd95"])
    return checked


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_monai_on_random_label_maps(seed):
    rng = np.random.default_rng(seed)
    shape = (28, 24, 12)
    spacing = tuple(rng.choice([0.6, 0.8, 1.0, 2.5, 5.0], size=3))
    gt = _random_labels(rng, shape, 6)
    pred = np.where(rng.random(shape) < 0.85, gt, _random_labels(rng, shape, 7))
    pred[pred == 5] = 0  # class 5 only in ground truth
    checked = _compare(pred, gt, spacing, classes=[1, 2, 3, 4, 5, 6, 7], tol=2.0)
    assert checked >= 3


@pytest.fixture(scope="module")
def amos_0013(realdata):
    img = nib.load(str(realdata / "amos_0013_full_label.nii.gz"))
    assert img.get_data_dtype() == np.uint16
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    # a 96x96x30 block around the pancreas/adrenals/vessels (many small organs, fast)
    gt = np.asarray(img.dataobj)[200:296, 200:296, 36:66]
    return gt, spacing


def _perturb(gt: np.ndarray, how: str, rng) -> np.ndarray:
    if how == "shift":
        return ndimage.shift(gt, (2, -3, 1), order=0, mode="constant", cval=0)
    if how == "erosion":
        out = np.zeros_like(gt)
        for c in np.unique(gt)[1:]:
            out[ndimage.binary_erosion(gt == c)] = c
        return out
    # noise: boundary flips plus sparse speckles anywhere
    out = gt.copy()
    edge = ndimage.morphological_gradient(gt, size=3) > 0
    flip = edge & (rng.random(gt.shape) < 0.3)
    out[flip] = ndimage.grey_dilation(gt, size=3)[flip]
    speckle = rng.random(gt.shape) < 5e-5  # ~14 voxels: islands far from their organ
    out[speckle] = rng.choice(np.unique(gt), speckle.sum())
    return out


@pytest.mark.parametrize("how", ["shift", "erosion", "noise"])
def test_matches_monai_on_real_amos_label(amos_0013, how):
    gt, spacing = amos_0013
    assert spacing == pytest.approx((0.781, 0.781, 5.0), abs=1e-3)
    pred = _perturb(gt, how, np.random.default_rng(0))
    classes = [int(c) for c in np.unique(np.concatenate([np.unique(gt), np.unique(pred)])) if c]
    assert len(classes) >= 6
    checked = _compare(pred, gt.astype(np.uint8), spacing, classes)
    assert checked >= 6
