"""The body's bounding box on the model grid, so the network skips the air around a patient.

A CT's field of view is mostly air, table and padding: on the real AMOS scan `amos_0001` the
body's box is 38 % of the slice. Organs lie inside the body, so scoring only that box (plus
a margin, so the network still sees air at the skin) and calling the rest background is
how nnU-Net-style pipelines crop, and it cuts the forward pass by the same factor.

The box is found on the maximum projection over all slices (one box per volume, so slices
still batch together), keeping the largest connected region above the threshold: the table
and loose objects outside the body do not widen it.

A crop moves the frame's edge (the network's zero padding) next to the skin, which changes
what a U-Net trained on whole slices predicts inside the body. So a model crops at
prediction only if it was trained on crops too: `crop_batch` gives training batches the same
box, and `predict_in_box` gives validation and `evaluate` the same path as `predict`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import ndimage

#: a box covering more than this share of the slice is not worth cropping to.
MAX_SHARE = 0.9


Box = tuple[slice, slice]
#: training boxes grow in steps of up to this many times the network's multiple (at most S/8),
#: so a GPU run meets few distinct shapes (cuDNN benchmarks each new one) and margins vary.
TRAIN_STEP_FACTOR = 4


def body_box(slices: Any, threshold: float, multiple: int = 16) -> Box | None:
    """(Z, S, S) slices (torch or NumPy) on the model grid → (rows, cols) of the body's box,
    or None.

    The box is widened by a margin of S/32 pixels on each side and then to a multiple of
    `multiple` (the network's down-sampling factor), within the frame. None when nothing is
    above `threshold`, or when the box would cover more than MAX_SHARE of the slice.
    """
    size_r, size_c = slices.shape[-2:]
    above = slices > threshold
    if isinstance(above, torch.Tensor):
        projection = above.any(dim=0).cpu().numpy()
    else:
        projection = np.asarray(above).any(axis=0)
    regions, count = ndimage.label(projection)
    if count == 0:
        return None
    largest = 1 + int(np.argmax(np.bincount(regions.ravel())[1:]))
    rows, cols = ndimage.find_objects(regions)[largest - 1]
    margin = max(4, max(size_r, size_c) // 32)
    box = (
        _widen(rows.start, rows.stop, margin, multiple, size_r),
        _widen(cols.start, cols.stop, margin, multiple, size_c),
    )
    share = (box[0].stop - box[0].start) * (box[1].stop - box[1].start) / (size_r * size_c)
    return None if share > MAX_SHARE else box


def _widen(start: int, stop: int, margin: int, multiple: int, limit: int) -> slice:
    """[start, stop) plus `margin` each side, grown to a multiple of `multiple` around its
    centre and shifted back inside [0, limit)."""
    start, stop = max(0, start - margin), min(limit, stop + margin)
    length = min(limit, -(-(stop - start) // multiple) * multiple)
    start = max(0, min(start - (length - (stop - start)) // 2, limit - length))
    return slice(start, start + length)


def crop_batch(
    x: torch.Tensor, y: torch.Tensor, threshold: float, multiple: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch, (B, C, S, S) raw inputs and (B, S, S) labels, cut to the body box
    of all its slices (in coarser steps than at prediction: `TRAIN_STEP_FACTOR`)."""
    factor = max(1, min(TRAIN_STEP_FACTOR, max(x.shape[-2:]) // (8 * multiple)))
    box = body_box(x.flatten(0, 1), threshold, factor * multiple)
    if box is None:
        return x, y
    return x[..., box[0], box[1]], y[..., box[0], box[1]]


def predict_in_box(predict: Callable[[Any], torch.Tensor], x: Any, box: Box | None) -> torch.Tensor:
    """`predict` ((B, C, H, W) → (B, H, W) labels) run on the box only; background elsewhere."""
    if box is None:
        return predict(x)
    inner = predict(x[..., box[0], box[1]])
    out = inner.new_zeros((inner.shape[0], *x.shape[-2:]))
    out[:, box[0], box[1]] = inner
    return out
