"""nnU-Net's cascade augmentation of the previous stage's labels (amoseg.ops.previous_augment),
checked against scipy's binary morphology with an explicit ball and hand-counted voxels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from amoseg.ops import previous_augment as pa


def ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    z, x, y = np.meshgrid(r, r, r, indexing="ij")
    return z**2 + x**2 + y**2 <= radius**2


def test_a_ball_of_radius_2_around_one_voxel_is_33_voxels():
    labels = np.zeros((11, 11, 11), np.uint8)
    labels[5, 5, 5] = 3
    pa.apply_operator(labels, 3, "dilation", 2.0)
    assert int((labels == 3).sum()) == 33  # 1 + 6 + 12 + 8 + 6: the voxels within distance 2
    assert int(ball(2).sum()) == 33


@pytest.mark.parametrize("operator", pa.OPERATORS)
@pytest.mark.parametrize("radius", [1, 3])
def test_operators_equal_scipys_with_a_ball(operator, radius):
    rng = np.random.default_rng(radius)
    mask = ndimage.binary_opening(rng.random((24, 26, 22)) > 0.55, iterations=1)
    mask[:, :3] = True  # touches the patch edge: no erosion from outside (zero-padded ~mask)
    labels = mask.astype(np.uint8) * 6
    strel = ball(radius)
    padded = np.pad(mask, radius + 1, constant_values=False)
    grown = np.pad(mask, radius + 1, constant_values=True)
    cut = tuple(slice(radius + 1, -(radius + 1)) for _ in range(3))
    expected = {
        "dilation": ndimage.binary_dilation(padded, strel)[cut],
        "erosion": ndimage.binary_erosion(grown, strel)[cut],
        # opening/closing as nnU-Net composes them: the erosion's border rule in both steps
        "opening": ndimage.binary_dilation(
            np.pad(ndimage.binary_erosion(grown, strel)[cut], radius + 1), strel
        )[cut],
        "closing": ndimage.binary_erosion(
            np.pad(ndimage.binary_dilation(padded, strel)[cut], radius + 1, constant_values=True),
            strel,
        )[cut],
    }[operator]
    pa.apply_operator(labels, 6, operator, float(radius))
    np.testing.assert_array_equal(labels == 6, expected)


def test_gained_voxels_leave_other_organs_and_lost_ones_become_background():
    labels = np.zeros((9, 9, 9), np.uint8)
    labels[4, 4, 4] = 1
    labels[4, 4, 5] = 2
    labels[4, 4, 6] = 2
    pa.apply_operator(labels, 1, "dilation", 1.0)
    assert labels[4, 4, 5] == 1 and labels[4, 4, 6] == 2
    pa.apply_operator(labels, 1, "erosion", 1.0)  # the 7-voxel cross loses its arms
    assert (labels == 1).sum() == 1 and labels[4, 4, 5] == 0 and labels[4, 4, 6] == 2


def test_a_component_under_15_percent_of_the_patch_is_removed_never_a_larger_one():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[:6, :6, :6] = 4  # 216 voxels: 21.6 % of the patch, kept
    labels[8, 8, 8] = 4  # one voxel: removed
    pa.remove_component(labels, 4, np.random.default_rng(0))
    assert labels[8, 8, 8] == 0 and (labels == 4).sum() == 216
    pa.remove_component(labels, 4, np.random.default_rng(0))
    assert (labels == 4).sum() == 216
    labels[9, 9, 0] = 4
    labels[9, 8, 1] = 4  # diagonal neighbours: one 26-connected component of 2
    pa.remove_component(labels, 4, np.random.default_rng(1))
    assert labels[9, 9, 0] == 0 and labels[9, 8, 1] == 0


def test_perturbation_is_seeded_and_as_often_as_nnunets():
    labels = np.zeros((24, 24, 24), np.uint8)
    labels[4:12, 4:12, 4:12] = 6
    labels[14:20, 14:20, 14:20] = 1
    labels[2, 20, 20] = 3
    first = pa.perturb_previous(labels, np.random.default_rng(7))
    np.testing.assert_array_equal(first, pa.perturb_previous(labels, np.random.default_rng(7)))
    assert first is not labels and labels[2, 20, 20] == 3  # a copy; the input is kept
    changed = [
        not np.array_equal(pa.perturb_previous(labels, np.random.default_rng(s)), labels)
        for s in range(400)
    ]
    # P(change) ≈ 1 - (1 - 0.4·(1 - 0.5³)) · (1 - 0.2·(1 - 0.5)): only 3 organs are present,
    # an operator can leave a cube unchanged (opening), and the 2 removable components are
    # the 1-voxel organ and the 216-voxel one (1.6 % of the patch)
    assert 0.25 < np.mean(changed) < 0.55, np.mean(changed)
