"""nnU-Net 2.8.1's prediction-time preprocessing (DefaultPreprocessor.run_case_npy), exactly:
the file's voxel grid in SimpleITK's (z, y, x) order, `transpose_forward`, crop to the filled
non-zero mask, the configuration's intensity normalisation, resampling to its spacing; plus the
record needed to put predictions back on the scan's grid. A cascade stage also takes the
previous stage's labels and appends them as one-hot channels (`amoseg.nnunet_models.cascade`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from amoseg.errors import AmosegError
from amoseg.nnunet_models.cascade import OUTSIDE, label_channels, resample_segmentation
from amoseg.nnunet_models.resample import new_shape_for, resample_image

RESAMPLING = "resample_data_or_seg_to_shape"
NORMALISATIONS = (
    "CTNormalization",
    "ZScoreNormalization",
    "NoNormalization",
    "RescaleTo01Normalization",
)


@dataclass
class Record:
    """Where the model grid sits in the scan: nnU-Net's properties dict, for one case."""

    axes: tuple[int, int, int]  # nibabel axis of each nnU-Net axis
    shape_before_crop: tuple[int, int, int]
    bbox: tuple[tuple[int, int], ...]
    shape_after_crop: tuple[int, int, int]
    spacing: tuple[float, float, float]  # of the scan, nnU-Net axis order
    model_spacing: tuple[float, float, float]  # of the model grid, nnU-Net axis order


def nonzero_box(mask: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Half-open bounding box of `mask` per axis (the whole axis where the mask is empty, as
    acvl_utils' get_bbox_from_mask leaves it)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append((int(hit[0]), int(hit[-1]) + 1) if hit.size else (0, mask.shape[axis]))
    return tuple(box)


class Preprocessor:
    """One configuration's preprocessing, read from plans.json and dataset.json."""

    def __init__(
        self,
        plans: dict[str, Any],
        conf: dict[str, Any],
        plans_path: Path,
        n_classes: int | None = None,
    ):
        #: a cascade stage: the model's class count (its input adds K-1 label channels)
        self.n_classes = n_classes if conf.get("previous_stage") is not None else None
        self.transpose_forward = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
        self.spacing = [float(s) for s in conf["spacing"]]
        self.schemes = list(conf["normalization_schemes"])
        self.use_mask = [bool(m) for m in conf.get("use_mask_for_norm", [False])]
        self.intensities = plans.get("foreground_intensity_properties_per_channel", {})
        keys = ["resampling_fn_data", "resampling_fn_probabilities"]
        keys += ["resampling_fn_seg"] if self.n_classes is not None else []
        for key in keys:
            if conf.get(key, RESAMPLING) != RESAMPLING:
                raise AmosegError(f"{key} {conf[key]} is not supported", plans_path)
        self.data_kwargs = dict(conf.get("resampling_fn_data_kwargs", {}))
        self.prob_kwargs = dict(conf.get("resampling_fn_probabilities_kwargs", {}))
        self.seg_kwargs = dict(conf.get("resampling_fn_seg_kwargs", {}))
        for kwargs in (self.data_kwargs, self.prob_kwargs, self.seg_kwargs):
            kwargs.pop("is_seg", None)
        if self.prob_kwargs.get("order", 1) != 1:
            raise AmosegError("only order-1 probability resampling is supported", plans_path)
        if self.n_classes is not None and self.seg_kwargs.get("order_z", 0) != 0:
            raise AmosegError("only order_z 0 segmentation resampling is supported", plans_path)
        unknown = [s for s in self.schemes if s not in NORMALISATIONS]
        if unknown:
            raise AmosegError(f"normalisation {unknown[0]} is not supported", plans_path)
        if len(self.schemes) != 1:
            raise AmosegError(
                f"the model reads {len(self.schemes)} channels; amoseg feeds one scan",
                plans_path,
            )

    def forward(
        self, data: np.ndarray, affine: np.ndarray, previous: np.ndarray | None = None
    ) -> tuple[np.ndarray, Record]:
        """(X, Y, Z) nibabel voxels → ((1, *model grid) float32, record); a cascade stage
        takes the previous stage's (X, Y, Z) labels and returns (K, *model grid)."""
        if (previous is None) != (self.n_classes is None):
            raise ValueError("a cascade stage needs the previous stage's labels, others none")
        zooms = np.sqrt((np.asarray(affine, dtype=float)[:3, :3] ** 2).sum(axis=0))
        # SimpleITK reads a NIfTI file as (z, y, x): nnU-Net axis j is nibabel axis 2 - t[j]
        axes = tuple(2 - t for t in self.transpose_forward)
        image = np.asarray(data, dtype=np.float32).transpose(axes)[None]
        spacing = tuple(float(zooms[a]) for a in axes)
        shape_before = image.shape[1:]
        mask = ndimage.binary_fill_holes(image[0] != 0)
        box = nonzero_box(mask)
        crop = tuple(slice(a, b) for a, b in box)
        image = np.ascontiguousarray(image[(slice(None), *crop)])
        mask = mask[crop]
        target = self.spacing if len(self.spacing) == 3 else [spacing[0], *self.spacing]
        new_shape = new_shape_for(image.shape[1:], spacing, target)
        seg = None
        if previous is not None:
            seg = np.asarray(previous).transpose(axes)[crop].astype(np.float64)
            seg[(seg == 0) & ~mask] = OUTSIDE
            norm_mask = seg >= 0  # what nnU-Net's normalisation reads as its mask
        image[0] = self._normalise(image[0], mask if seg is None else norm_mask)
        image = resample_image(image, new_shape, spacing, target, **self.data_kwargs)
        record = Record(axes, shape_before, box, mask.shape, spacing, tuple(target))
        if seg is not None and self.n_classes is not None:
            seg = resample_segmentation(seg, new_shape, spacing, target, **self.seg_kwargs)
            image = np.concatenate([image, label_channels(seg, self.n_classes)])
        return image, record

    def _normalise(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        scheme, props = self.schemes[0], self.intensities.get("0", {})
        eps = 1e-8
        if scheme == "CTNormalization":
            np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
            image -= props["mean"]
            image /= max(props["std"], eps)
        elif scheme == "ZScoreNormalization":
            if self.use_mask[0]:
                mean, std = image[mask].mean(), image[mask].std()
                image[mask] = (image[mask] - mean) / max(std, eps)
            else:
                mean, std = image.mean(), image.std()
                image -= mean
                image /= max(std, eps)
        elif scheme == "RescaleTo01Normalization":
            image -= image.min()
            image /= np.clip(image.max(), a_min=eps, a_max=None)
        return image
