"""nnU-Net's augmentation of a cascade stage's previous-stage labels, on the label map.

A cascade's full-resolution stage learns from the low-resolution stage's held-out
predictions; at test time those predictions are wrong in new ways. nnU-Net v2 therefore
perturbs them while training (its trainer's cascade transforms, batchgeneratorsv2):

- with probability 0.4 per sample, each organ (in random order, each with probability 0.5)
  gets one of binary dilation, erosion, opening or closing with a ball whose radius is drawn
  from 1..8 voxels; voxels an organ gains leave every other organ;
- with probability 0.2 per sample, each organ (random order, probability 0.5) loses one random
  connected component (26-connected) that covers less than 15 % of the patch.

nnU-Net applies these to the one-hot channels; on a label map the same operations give the
same result (a voxel belongs to one organ at most, and a voxel an organ loses becomes
background). The ball is "every voxel within distance r" (a Euclidean distance transform,
exact for any radius, and cheap: computed on the organ's box grown by r), where nnU-Net
convolves with skimage's ball; outside the patch counts as neither grown into nor eroded
from (nnU-Net's zero padding of the complement). Runs in the data-loader workers, on numpy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from amoseg.labels import NUM_CLASSES

#: nnU-Net v2's values (nnUNetTrainer.get_training_transforms, is_cascaded)
MORPH_P, REMOVE_P, PER_LABEL_P = 0.4, 0.2, 0.5
RADIUS = (1.0, 8.0)
MAX_COMPONENT_SHARE = 0.15
OPERATORS = ("dilation", "erosion", "opening", "closing")


def perturb_previous(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A perturbed copy of a patch's previous-stage labels (AMOS ids 0..15), drawn from `rng`."""
    out = np.array(labels, copy=True)
    organs = range(1, NUM_CLASSES)
    if rng.random() < MORPH_P:
        for organ in _chosen(organs, rng):
            operator = OPERATORS[int(rng.integers(len(OPERATORS)))]
            apply_operator(out, organ, operator, float(rng.uniform(*RADIUS)))
    if rng.random() < REMOVE_P:
        for organ in _chosen(organs, rng):
            remove_component(out, organ, rng)
    return out


def _chosen(organs: range, rng: np.random.Generator) -> list[int]:
    order = rng.permutation(np.asarray(organs))
    return [int(o) for o in order if rng.random() < PER_LABEL_P]


def apply_operator(labels: np.ndarray, organ: int, operator: str, radius: float) -> None:
    """`operator` with a ball of `radius` voxels on `organ`'s mask, in place: voxels it gains
    become `organ` (whatever they were), voxels it loses become background."""
    mask = labels == organ
    if not mask.any():
        return
    box = _grown_box(mask, math.ceil(radius) + 1)
    sub = mask[box]
    if operator == "dilation":
        result = _dilate(sub, radius)
    elif operator == "erosion":
        result = _erode(sub, radius)
    elif operator == "opening":
        result = _dilate(_erode(sub, radius), radius)
    elif operator == "closing":
        result = _erode(_dilate(sub, radius), radius)
    else:
        raise ValueError(f"unknown operator {operator!r}")
    view = labels[box]
    view[result & ~sub] = organ
    view[sub & ~result] = 0


def remove_component(labels: np.ndarray, organ: int, rng: np.random.Generator) -> None:
    """Remove one random connected component of `organ` smaller than MAX_COMPONENT_SHARE of
    the patch, in place (none when every component is larger)."""
    mask = labels == organ
    if not mask.any():
        return
    lab, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    valid = np.flatnonzero(sizes < mask.size * MAX_COMPONENT_SHARE) + 1
    if len(valid):
        labels[lab == int(valid[int(rng.integers(len(valid)))])] = 0


def _grown_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The mask's bounding box grown by `margin` on every side, within the array."""
    where = np.nonzero(mask)
    return tuple(
        slice(max(0, int(w.min()) - margin), min(n, int(w.max()) + margin + 1))
        for w, n in zip(where, mask.shape, strict=True)
    )


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Every voxel within `radius` of the mask (a ball dilation)."""
    if not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= radius


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """The voxels whose ball of `radius` lies in the mask; beyond the array counts as mask."""
    if mask.all():
        return mask.copy()
    return ndimage.distance_transform_edt(mask) > radius
