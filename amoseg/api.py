"""The Python API: the `amoseg predict` pipeline as calls, for notebooks and scripts.

    import amoseg
    model = amoseg.load("runs/unet")            # a run folder or a .amoseg.zip package
    result = model.segment("scan.nii.gz")       # a path, a DICOM folder or a nibabel image
    result.label                                # nibabel image in the input's geometry
    result.volumes                              # one dict per organ: mL, voxels, mean HU

The model is loaded once and reused for every call. User errors raise
`amoseg.AmosegError`, with the same one-line message the CLI prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from amoseg.errors import AmosegError

ImageLike = str | Path | nib.spatialimages.SpatialImage


@dataclass
class Segmentation:
    """One scan's result. `label`: uint8 AMOS ids with the input's shape, affine and
    qform/sform; `volumes`: per organ id, name, voxels, volume_ml, mean_hu;
    `probabilities`: (16, X, Y, Z) float16 class probabilities on the input's voxel grid
    (averaged over an ensemble's members), only when asked for (32 bytes per voxel)."""

    label: nib.Nifti1Image
    volumes: list[dict[str, Any]]
    probabilities: np.ndarray | None = None
    source: str = ""

    def volume_ml(self, organ: str | int) -> float:
        """Volume of one organ by AMOS id or name (0.0 when absent)."""
        for row in self.volumes:
            if organ in (row["label"], row["organ"]):
                if row["volume_ml"] is None:  # the model does not predict this organ
                    raise AmosegError(f"organ {organ!r} is not covered by this model")
                return float(row["volume_ml"])
        raise AmosegError(f"unknown organ {organ!r}", None, "use an AMOS id 1-15 or its name")


class Model:
    """A loaded run or package, ready to segment many scans."""

    def __init__(self, backend: Any, source: Path, card: dict[str, Any] | None = None):
        #: a ScoreBackend, or a list of them for an ensemble package
        self.backend = backend
        self.source = source
        #: the model card of a package ({} for a run folder)
        self.card = card or {}

    def __repr__(self) -> str:
        members = self.backend if isinstance(self.backend, list) else [self.backend]
        return f"amoseg.Model({str(self.source)!r}, members={len(members)})"

    def segment(
        self,
        image: ImageLike,
        *,
        probabilities: bool = False,
        postprocess: str = "none",
        batch_size: int | None = None,
    ) -> Segmentation:
        """Segment one scan: a NIfTI path, a DICOM series folder or a nibabel image."""
        import torch

        from amoseg.inference.predict import label_image_like, scan_probabilities, segment_scan
        from amoseg.inference.volumes import organ_volumes
        from amoseg.nnunet_models.names import covered_by

        reference, data, name = _read_image(image)
        labels = segment_scan(
            self.backend, data, reference.affine, batch_size=batch_size,
            postprocess=postprocess,  # type: ignore[arg-type]
        )  # fmt: skip
        probs = None
        if probabilities:
            scores = scan_probabilities(self.backend, data, reference.affine, batch_size=batch_size)
            probs = scores.to(torch.float16).cpu().numpy()
        return Segmentation(
            label=label_image_like(labels, reference),
            volumes=organ_volumes(labels, data, reference.affine, covered_by(self.backend)),
            probabilities=probs,
            source=name,
        )

    def segment_many(self, images: Iterable[ImageLike], **options: Any) -> Iterator[Segmentation]:
        """Segment scans one after another with the model loaded once (results as they come)."""
        for image in images:
            yield self.segment(image, **options)


def load(
    model: str | Path, *, device: str = "auto", precision: str = "auto", crop: bool = True
) -> Model:
    """A run folder (`amoseg train --out`) or a model package (`amoseg export --package`)."""
    from amoseg.inference.backends import resolve_device
    from amoseg.inference.package import is_package, read_package
    from amoseg.inference.predict import open_backend
    from amoseg.nnunet_models import is_nnunet_model_dir, open_nnunet_model

    resolve_device(device)
    path = Path(model)
    if is_nnunet_model_dir(path):  # issue 26: an nnU-Net v2 trained model folder
        return Model(open_nnunet_model(path, device=device, precision=precision), path)
    backend = open_backend(path, device=device, precision=precision, crop=crop)
    card = read_package(path).card if is_package(path) else {}
    return Model(backend, path, card)


def segment(
    image: ImageLike, model: str | Path | Model = "runs/unet", **options: Any
) -> Segmentation:
    """One call: load `model` (unless it is a loaded Model) and segment `image`."""
    loaded = model if isinstance(model, Model) else load(model)
    return loaded.segment(image, **options)


def _read_image(image: ImageLike) -> tuple[nib.Nifti1Image, np.ndarray, str]:
    """(reference image for the output header, voxels, a name) from any accepted input."""
    from amoseg.inference.inputs import expand_input, load_scan

    if isinstance(image, str | Path):
        items = expand_input(image)
        if len(items) != 1:
            raise AmosegError(
                f"folder holds {len(items)} scans", image, "pass one scan, or use segment_many"
            )
        scan = load_scan(items[0])
        return scan.image, scan.data, str(items[0].path)
    if not isinstance(image, nib.spatialimages.SpatialImage):
        raise AmosegError(
            f"cannot segment a {type(image).__name__}",
            None,
            "pass a NIfTI path, a DICOM folder or a nibabel image",
        )
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or min(data.shape) < 1:
        raise AmosegError(f"image must be a 3D volume, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        data = np.asarray(data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise AmosegError("image holds NaN or infinite voxels")
    affine = image.affine
    if (
        affine is None
        or not np.isfinite(affine).all()
        or abs(np.linalg.det(affine[:3, :3])) < 1e-12
    ):
        raise AmosegError("image has an invalid affine (NaN or zero voxel size)")
    reference = image if isinstance(image, nib.Nifti1Image) else nib.Nifti1Image(data, affine)
    if reference.shape[:3] != data.shape:
        reference = nib.Nifti1Image(data, affine, reference.header)
    return reference, data, getattr(image, "get_filename", lambda: None)() or "<image>"
