"""What `predict` writes besides the volume table: NIfTI labels, a DICOM-SEG, an HTML viewer.

The choice is one settings object, checked before any model runs, so a NIfTI scan asked
to become a DICOM-SEG fails in one line instead of after a minute of inference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
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

    def check_input(self, path: Path, kind: str, series: str | None = None) -> None:
        """A DICOM-SEG references its source series: a NIfTI input has none, and a series
        whose grid the NIfTI does not keep (`seg_problem`) cannot carry one. Only
        `dicom-seg` refuses; `both` writes what each input allows (`for_input`)."""
        if self.format != "dicom-seg":
            return
        if kind != "dicom":
            raise AmosegError(
                "--format dicom-seg needs a DICOM series as input (a NIfTI file has no "
                "source images for the SEG to reference)",
                path,
                "use --format nifti for NIfTI scans",
            )
        from amoseg.inference.dicom_seg import seg_problem

        if problem := seg_problem(Path(path), series):
            raise AmosegError(
                f"no DICOM-SEG can be written for this input: {problem}",
                path,
                "use --format nifti (or both: the NIfTI, and a SEG where the input allows)",
            )

    def for_input(
        self, path: Path, kind: str, series: str | None = None
    ) -> tuple[OutputSettings, str | None]:
        """The settings for one input, and a note when `both` must leave out its DICOM-SEG
        (a NIfTI input, or a series that cannot carry one)."""
        if self.format != "both":
            return self, None
        if kind != "dicom":
            return replace(self, format="nifti"), None  # expected in a mixed batch: no note
        from amoseg.inference.dicom_seg import seg_problem

        if problem := seg_problem(Path(path), series):
            note = f"{Path(path).name}: NIfTI only, no DICOM-SEG ({problem})"
            return replace(self, format="nifti"), note
        return self, None


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
    series: str | None = None,
) -> dict[str, Path]:
    """The DICOM-SEG and viewer files asked for → {"dicom_seg": path, "html": path}."""
    written: dict[str, Path] = {}
    if settings.dicom_seg:
        from amoseg.inference.dicom_seg import read_source_series, write_dicom_seg

        written["dicom_seg"] = write_dicom_seg(
            labels, affine, read_source_series(source, series), out_dir / f"{name}_seg.dcm",
            model_name=settings.model_name,
        )  # fmt: skip
    if settings.html:
        from amoseg.render.viewer import write_viewer

        written["html"] = write_viewer(
            out_dir / f"{name}_viewer.html", labels, affine, organs, data,
            title=name, modality="ct" if looks_like_ct(data) else "mr",
        )  # fmt: skip
    return written
