"""nnU-Net v2's cascade (3d_cascade_fullres after 3d_lowres), as nnU-Net 2.8.1 runs it.

`nnUNetv2_predict -c 3d_cascade_fullres -prev_stage_predictions DIR` reads the low-resolution
stage's segmentation (written on the scan's grid) beside the image and, in
DefaultPreprocessor.run_case_npy: transposes and crops it with the image, marks its background
outside the filled non-zero mask -1 (which also widens the ZScore normalisation mask to
`seg >= 0`), resamples it to the full-resolution grid with `resize_segmentation` (order 1 per
label indicator, per-voxel arg-max, exact ties to the nearest-neighbour label; batchgenerators
0.25.5), and appends one float32 channel per foreground label (`seg == label`; background and
-1 are all-zero), after the image channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from amoseg.errors import AmosegError
from amoseg.nnunet_models.folder import ModelFolder, read_model_folder
from amoseg.nnunet_models.resample import _nearest_indices, _resize, separate_z_axis

OUTSIDE = -1  # nnU-Net's label for background outside the non-zero mask


def stage_folder_name(folder: ModelFolder, stage: str) -> str:
    """nnU-Net's name for `stage` trained with the same trainer and plans as `folder`."""
    parts = folder.path.name.split("__")
    return "__".join([*parts[:2], stage]) if len(parts) == 3 else stage


def previous_stage_folder(folder: ModelFolder, explicit: str | Path | None = None) -> ModelFolder:
    """The stage whose segmentation `folder` (a cascade) reads: `explicit`, or nnU-Net's
    sibling `<Trainer>__<Plans>__<previous_stage>`; the same folds and labels, or one line."""
    stage = str(folder.configuration["previous_stage"])
    if explicit is None:
        path = folder.path.parent / stage_folder_name(folder, stage)
        hint = (
            f"keep the {stage} model folder beside it, as nnU-Net writes them, "
            "or name it (--previous-stage DIR; previous_stage= in Python)"
        )
    else:
        path, hint = Path(explicit), f"check the path given as the previous stage ({stage})"
    if not path.is_dir():
        raise AmosegError(
            f"{folder.configuration_name} needs its {stage} stage; no model folder", path, hint
        )
    prev = read_model_folder(path, configuration=stage)
    if prev.path.resolve() == folder.path.resolve() or prev.configuration_name != stage:
        raise AmosegError(
            f"not the {stage} stage of {folder.name} (its configuration is "
            f"{prev.configuration_name})",
            path,
        )
    if prev.configuration.get("previous_stage") is not None:
        raise AmosegError("a cascade of more than two stages is not supported", path)
    if prev.dataset.get("labels") != folder.dataset.get("labels"):
        raise AmosegError(
            f"the {stage} stage's labels differ from the cascade's",
            path / "dataset.json",
            "both stages must be trained on the same dataset",
        )
    folds = list(folder.checkpoints)
    missing = [f for f in folds if f not in prev.checkpoints]
    if missing:
        raise AmosegError(
            f"the {stage} stage has no fold {missing[0]} (the cascade uses folds "
            f"{', '.join(folds)})",
            path,
            "train that fold of the low-resolution stage, or choose the folds both have",
        )
    return replace(prev, checkpoints={f: prev.checkpoints[f] for f in folds})


def _resize_segmentation(seg: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """batchgenerators' resize_segmentation(seg, shape, order) with seg_tiebreak='nearest':
    each label's indicator resized (skimage's `resize`, mode='edge'), the first label with the
    highest score wins, unless the nearest-neighbour label shares that (non-zero) score."""
    nearest = _resize(seg, shape, 0)
    if order == 0:
        return nearest
    labels = np.unique(seg)
    if len(labels) == 1:
        return np.full(tuple(shape), labels[0], dtype=seg.dtype)
    nn_index = np.searchsorted(labels, nearest)
    best = np.zeros(tuple(shape))
    nn_score = np.zeros(tuple(shape))
    win = np.zeros(tuple(shape), dtype=np.int32)
    for i, label in enumerate(labels):
        score = _resize((seg == label).astype(float), shape, order)
        if i == 0:
            best = score
        else:
            better = score > best
            win[better] = i
            np.maximum(best, score, out=best)
        is_nn = nn_index == i
        nn_score[is_nn] = score[is_nn]
    nn_top = (nn_score == best) & (nn_score > 0)
    win[nn_top] = nn_index[nn_top]
    return labels[win]


def resample_segmentation(
    seg: np.ndarray,
    new_shape: Sequence[int],
    current: Sequence[float],
    new: Sequence[float],
    order: int = 1,
    order_z: int = 0,
    force_separate_z: bool | None = None,
) -> np.ndarray:
    """(*shape) float64 labels → (*new_shape): nnU-Net's `resample_data_or_seg_to_shape` with
    is_seg=True (anisotropic: in-plane per slice, then nearest along the low-resolution axis)."""
    shape = tuple(int(s) for s in seg.shape)
    target = tuple(int(s) for s in new_shape)
    if shape == target:
        return seg
    axis = separate_z_axis(force_separate_z, current, new)
    if axis is None:
        return _resize_segmentation(seg, target, order)
    if order_z != 0:
        raise ValueError(f"order_z {order_z} is not supported for segmentations (0)")
    plane = [s for i, s in enumerate(target) if i != axis]
    moved = np.moveaxis(seg, axis, 0)
    here = np.stack([_resize_segmentation(s, plane, order) for s in moved])
    if shape[axis] != target[axis]:
        here = here[_nearest_indices(shape[axis], target[axis])]
    return np.moveaxis(here, 0, axis)


def label_channels(seg: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes - 1, *shape) float32: one channel per foreground label (1..K-1)."""
    out = np.zeros((n_classes - 1, *seg.shape), dtype=np.float32)
    for label in range(1, n_classes):
        out[label - 1] = seg == label
    return out
