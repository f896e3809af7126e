"""The Python API: the `amoseg predict` pipeline as calls, for notebooks and scripts.

    import amoseg
    model = amoseg.load("runs/demo/runs/unet")  # a run, a folder of fold runs, a package
    result = model.segment("scan.nii.gz")       # a path, a DICOM folder, a nibabel or
                                                # SimpleITK image, or an array + spacing
    result.label                                # nibabel image in the input's geometry
    result.volumes                              # one dict per organ: mL, voxels, mean HU
    model.segment(array, spacing=(0.8, 0.8, 2.5))   # numpy / torch (X, Y, Z) in RAS order

The model is loaded once and reused for every call. `load` and `amoseg predict` share one
`Segmenter` (amoseg.inference.segmenter) and so every default: test-time mirroring, the
saved post-processing, precision, body crop. User errors raise `amoseg.AmosegError`, with
the same one-line message the CLI prints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from amoseg.errors import AmosegError

#: what `Model.segment` takes (numpy arrays and torch tensors need `spacing` or `affine`)
ImageLike = str | Path | nib.spatialimages.SpatialImage | np.ndarray | Any


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
    #: the input's voxels (file order), kept for the viewer page
    image: np.ndarray | None = field(default=None, repr=False)

    def volume_ml(self, organ: str | int) -> float:
        """Volume of one organ by AMOS id or name (0.0 when absent)."""
        for row in self.volumes:
            if organ in (row["label"], row["organ"]):
                if row["volume_ml"] is None:  # the model does not predict this organ
                    raise AmosegError(f"organ {organ!r} is not covered by this model")
                return float(row["volume_ml"])
        raise AmosegError(f"unknown organ {organ!r}", None, "use an AMOS id 1-15 or its name")

    def save(self, path: str | Path) -> Path:
        """The label map as NIfTI (what `amoseg predict` writes as <name>_seg.nii.gz)."""
        from amoseg.data.nifti import save_nifti

        save_nifti(self.label, Path(path))
        return Path(path)

    def save_viewer(self, path: str | Path, title: str | None = None) -> Path:
        """The self-contained offline HTML viewer (`predict --html`)."""
        from amoseg.inference.outputs import looks_like_ct
        from amoseg.render.viewer import write_viewer

        labels, data = np.asarray(self.label.dataobj), self.image
        modality = "ct" if data is not None and looks_like_ct(data) else "mr"
        return write_viewer(
            Path(path), labels, self.label.affine, self.volumes, data,
            title=title or Path(self.source).name, modality=modality,
        )  # fmt: skip

    def save_dicom_seg(
        self, path: str | Path, series: str | Path, model_name: str = "amoseg"
    ) -> Path:
        """A DICOM-SEG referencing the DICOM series folder the scan was read from
        (`predict --format dicom-seg`)."""
        from amoseg.inference.dicom_seg import read_source_series, write_dicom_seg

        labels = np.asarray(self.label.dataobj)
        return write_dicom_seg(
            labels, self.label.affine, read_source_series(Path(series)), Path(path),
            model_name=model_name,
        )  # fmt: skip


class Model:
    """A loaded run, ensemble or package, ready to segment many scans."""

    def __init__(self, segmenter: Any, source: Path):
        #: the `amoseg.inference.segmenter.Segmenter` every call runs
        self.segmenter = segmenter
        self.source = source
        #: the model card of a package ({} for run folders)
        self.card: dict[str, Any] = segmenter.bundles[0].card

    @property
    def backend(self) -> Any:
        """The scoring backend (a list of them for an ensemble)."""
        backends = self.segmenter.backends
        return backends[0] if len(backends) == 1 else backends

    def __repr__(self) -> str:
        return f"amoseg.Model({str(self.source)!r}, members={len(self.segmenter.backends)})"

    def segment(
        self,
        image: ImageLike,
        *,
        probabilities: bool = False,
        spacing: Sequence[float] | None = None,
        affine: np.ndarray | None = None,
    ) -> Segmentation:
        """Segment one scan: a NIfTI/NRRD/MHA path, a DICOM series folder, a nibabel or
        SimpleITK image, or a numpy array / torch tensor (X, Y, Z) with `spacing` (mm, RAS
        axes) or `affine` (voxel → RAS world). The label comes back in the input's grid."""
        import torch

        from amoseg.inference.outputs import looks_like_ct
        from amoseg.inference.predict import label_image_like
        from amoseg.inference.volumes import organ_volumes
        from amoseg.nnunet_models.names import covered_by

        reference, data, name = _read_image(image, spacing=spacing, affine=affine)
        labels = self.segmenter.labels(data, reference.affine)
        probs = None
        if probabilities:
            scores = self.segmenter.probabilities(data, reference.affine)
            probs = scores.to(torch.float16).cpu().numpy()
        return Segmentation(
            label=label_image_like(labels, reference),
            volumes=organ_volumes(
                labels,
                data,
                reference.affine,
                covered_by(self.segmenter.backends),
                modality="ct" if looks_like_ct(data) else "mr",  # MR values are not HU
            ),
            probabilities=probs,
            source=name,
            image=data,
        )

    def segment_many(self, images: Iterable[ImageLike], **options: Any) -> Iterator[Segmentation]:
        """Segment scans one after another with the model loaded once (results as they come)."""
        for image in images:
            yield self.segment(image, **options)


def load(
    model: str | Path | Sequence[str | Path],
    *,
    device: str = "auto",
    precision: str = "auto",
    crop: bool = True,
    tta: bool | None = None,
    postprocess: str | Sequence[int] = "auto",
    batch_size: int | None = None,
    step_size: float = 0.5,
    previous_stage: str | Path | None = None,
) -> Model:
    """A run folder (`amoseg train --out`), a folder of fold runs, a model package
    (`amoseg export --package`), an nnU-Net v2 model folder, or a list of them (an ensemble).
    Options and defaults are `amoseg predict`'s (`previous_stage`: its --previous-stage)."""
    from amoseg.inference.segmenter import Segmenter, SegmentOptions

    options = SegmentOptions(
        device=device, precision=precision, crop=crop, tta=tta, postprocess=postprocess,
        batch_size=batch_size, step_size=step_size,
        previous_stage=None if previous_stage is None else Path(previous_stage),
    )  # fmt: skip
    paths = [model] if isinstance(model, str | Path) else list(model)
    return Model(Segmenter.open(paths, options), Path(paths[0]))


def segment(
    image: ImageLike, model: str | Path | Model = "runs/demo/runs/unet", **options: Any
) -> Segmentation:
    """One call: load `model` (unless it is a loaded Model) and segment `image`."""
    loaded = model if isinstance(model, Model) else load(model)
    return loaded.segment(image, **options)


def _read_image(
    image: ImageLike,
    *,
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
) -> tuple[nib.Nifti1Image, np.ndarray, str]:
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
    if _is_sitk(image):
        image = _sitk_to_nifti(image)
    elif not isinstance(image, nib.spatialimages.SpatialImage):
        image = _array_to_nifti(image, spacing, affine)
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or min(data.shape) < 1:
        raise AmosegError(f"image must be a 3D volume, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        data = np.asarray(data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise AmosegError("image holds NaN or infinite voxels")
    _check_affine(image.affine)
    reference = image if isinstance(image, nib.Nifti1Image) else nib.Nifti1Image(data, image.affine)
    if reference.shape[:3] != data.shape:
        reference = nib.Nifti1Image(data, image.affine, reference.header)
    return reference, data, getattr(image, "get_filename", lambda: None)() or "<image>"


def _check_affine(affine: Any) -> None:
    if (
        affine is None
        or not np.isfinite(affine).all()
        or abs(np.linalg.det(np.asarray(affine)[:3, :3])) < 1e-12
    ):
        raise AmosegError("image has an invalid affine (NaN or zero voxel size)")


def _is_sitk(image: Any) -> bool:
    return type(image).__module__.startswith("SimpleITK") and hasattr(image, "GetDirection")


def _sitk_to_nifti(image: Any) -> nib.Nifti1Image:
    """A SimpleITK image as the NIfTI nibabel would read from its file: SimpleITK's arrays
    are (z, y, x) in LPS world coordinates; nibabel's (x, y, z) in RAS."""
    import SimpleITK as sitk

    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise AmosegError(
            f"image must be a 3D scalar volume, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    data = np.ascontiguousarray(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0))
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    affine[:3, 3] = image.GetOrigin()
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # LPS → RAS
    return nib.Nifti1Image(data, affine)


def _array_to_nifti(
    image: Any, spacing: Sequence[float] | None, affine: np.ndarray | None
) -> nib.Nifti1Image:
    """A numpy array or torch tensor (X, Y, Z) with its spacing (RAS axes) or affine."""
    if type(image).__module__.startswith("torch"):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise AmosegError(
            f"cannot segment a {type(image).__name__}",
            None,
            "pass a path, a nibabel or SimpleITK image, or an array with spacing=(x, y, z)",
        )
    if (spacing is None) == (affine is None):
        raise AmosegError(
            "an array needs its geometry: pass exactly one of spacing=(x, y, z) mm or affine=",
            None,
            "e.g. model.segment(array, spacing=(0.8, 0.8, 2.5)) for an (X, Y, Z) RAS array",
        )
    if affine is None:
        values = [float(v) for v in spacing]  # type: ignore[union-attr]
        if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
            raise AmosegError(f"spacing must be three positive numbers (mm), got {spacing}")
        affine = np.diag([*values, 1.0])
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4):
        raise AmosegError(f"affine must be 4×4, got shape {affine.shape}")
    return nib.Nifti1Image(image, affine)
