"""Per-class probabilities on the scan's own grid, for the Python API's `probabilities=True`.

The same way in as `segment_volume` (RAS+, slices resized as `prepare` did, the body box);
on the way back the scores are resized bilinearly to the scan's in-plane grid, turned into
probabilities (softmax of network logits; models without a network already give them), and
put back in the file's axis order. Stored as float16: 16 classes × 2 bytes per voxel.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from amoseg.data.crop import body_box
from amoseg.data.geometry import from_canonical_ornt
from amoseg.inference.backends import ModelBackend, ScoreBackend
from amoseg.inference.pipeline import as_tensor, resize_slices, to_canonical_tensor
from amoseg.labels import NUM_CLASSES


def volume_probabilities(
    backend: ScoreBackend, data: np.ndarray, affine: np.ndarray, batch_size: int | None = None
) -> np.ndarray:
    """(X, Y, Z) raw intensities → (16, X, Y, Z) float16 probabilities, file order."""
    device = backend.device
    size = backend.input_size
    batch_size = batch_size or (32 if device.type == "cuda" else 8)
    volume = to_canonical_tensor(as_tensor(data).to(device), affine)
    nx, ny, nz = volume.shape
    slices = resize_slices(volume, size)
    box = None
    if backend.body_threshold is not None:
        box = body_box(slices, backend.body_threshold, backend.size_multiple)
    if box is not None:
        slices = slices[:, box[0], box[1]].contiguous()
    offsets = torch.arange(-backend.context, backend.context + 1, device=device)
    out = torch.empty((NUM_CLASSES, nx, ny, nz), dtype=torch.float16, device=device)
    given_probabilities = isinstance(backend, ModelBackend)
    for start in range(0, nz, batch_size):
        stop = min(start + batch_size, nz)
        idx = (torch.arange(start, stop, device=device)[:, None] + offsets).clamp_(0, nz - 1)
        with torch.inference_mode():
            scores = backend.scores(slices[idx]).to(device).float()
            probs = scores if given_probabilities else scores.softmax(1)
            if box is not None:  # outside the body's box: background for certain
                full = probs.new_zeros((probs.shape[0], NUM_CLASSES, size, size))
                full[:, 0] = 1.0
                full[:, :, box[0], box[1]] = probs
                probs = full
            probs = F.interpolate(probs, size=(nx, ny), mode="bilinear", align_corners=False)
        out[:, :, :, start:stop] = probs.permute(1, 2, 3, 0).half()
    ornt = from_canonical_ornt(affine)  # as apply_orientation_tensor, classes kept first
    for axis, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            out = out.flip(axis + 1)
    order = [0, *(int(a) + 1 for a in np.argsort(ornt[:, 0]))]
    return out.permute(*order).contiguous().cpu().numpy()
