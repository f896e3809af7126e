"""What `predict` writes besides the volume table: NIfTI labels, a DICOM-SEG, an HTML viewer.

The choice is one settings object, checked before any model runs, so a NIfTI scan asked
to become a DICOM-SEG fails in one line instead of after a minute of inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amoseg.errors import AmosegError

FORMATS = ("nifti", "dicom-seg", "both")


@dataclass(frozen=True)
class OutputSettings:
    """`format`: nifti (`<name>_seg.nii.gz`), dicom-seg (`<name>_seg.dcm`) or both;
    `html`: also `<name>_viewer.html`."""

    format: str = "nifti"
    html: bool = False
    model_name: str = "amoseg"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise AmosegError(
                f"unknown --format {self.format!r}", None, "use nifti, dicom-seg or both"
            )

    @property
    def nifti(self) -> bool:
        return self.format in ("nifti", "both")

    @property
    def dicom_seg(self) -> bool:
        return self.format in ("dicom-seg", "both")

    def check_input(self, path: Path, kind: str) -> None:
        """A DICOM-SEG references its source series: a NIfTI input has none."""
        if self.dicom_seg and kind != "dicom":
            raise AmosegError(
                "--format dicom-seg needs a DICOM series as input (a NIfTI file has no "
                "source images for the SEG to reference)",
                path,
                "use --format nifti for NIfTI scans",
            )


def looks_like_ct(data: np.ndarray) -> bool:
    """CT holds air near −1000 HU; MR intensities are non-negative."""
    return bool(data.min() < -200)


def write_extra_outputs(
    settings: OutputSettings,
    *,
    name: str,
    source: Path,
    labels: np.ndarray,
    data: np.ndarray,
    affine: np.ndarray,
    organs: list[dict],
    out_dir: Path,
) -> dict[str, Path]:
    """The DICOM-SEG and viewer files asked for → {"dicom_seg": path, "html": path}."""
    written: dict[str, Path] = {}
    if settings.dicom_seg:
        from amoseg.inference.dicom_seg import read_source_series, write_dicom_seg

        written["dicom_seg"] = write_dicom_seg(
            labels, affine, read_source_series(source), out_dir / f"{name}_seg.dcm",
            model_name=settings.model_name,
        )  # fmt: skip
    if settings.html:
        from amoseg.render.viewer import write_viewer

        written["html"] = write_viewer(
            out_dir / f"{name}_viewer.html", labels, affine, organs, data,
            title=name, modality="ct" if looks_like_ct(data) else "mr",
        )  # fmt: skip
    return written
