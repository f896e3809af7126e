"""Reading a DICOM CT series into a NIfTI image in RAS world coordinates.

DICOM places voxels in LPS patient coordinates (x to the patient's left, y to posterior);
NIfTI and nibabel use RAS. The voxel array is kept in the order SimpleITK reads it (column,
row, slice sorted along the slice normal) and only the affine changes: the RAS affine is the
LPS affine with its first two rows negated. SimpleITK (GDCM) is used because real series
are often JPEG-2000 compressed, which pydicom cannot decode without extra plugins.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.errors import AmosegError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
IMAGE_POSITION_TAG = "0020|0032"


def lps_to_ras_affine(
    direction: tuple[float, ...], spacing: tuple[float, ...], origin: tuple[float, ...]
) -> np.ndarray:
    """4x4 RAS affine from ITK geometry (row-major 3x3 direction, spacing, LPS origin)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) @ np.diag(spacing)
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def dicom_series_files(folder: str | Path) -> list[str]:
    """The files of the single DICOM series in `folder`, sorted along the slice normal.

    A folder that mixes series is refused: silently picking one would segment the wrong scan.
    """
    import SimpleITK as sitk

    folder = Path(folder)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not ids:
        raise AmosegError(
            "no DICOM series found in folder",
            folder,
            "pass a folder holding one DICOM series, or a .nii/.nii.gz file",
        )
    if len(ids) > 1:
        raise AmosegError(
            f"folder mixes {len(ids)} DICOM series",
            folder,
            "put each series in its own folder and pass the folders",
        )
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    stray = _unreadable_dicom_files(folder, files)
    if stray:
        raise AmosegError(
            f"{len(stray)} DICOM file(s) in the folder cannot be read as part of the series",
            stray[0],
            "the file may be truncated or damaged; re-copy or re-export the series",
        )
    if len(files) < 2:
        raise AmosegError(
            f"DICOM series has {len(files)} slice(s)", folder, "amoseg needs a 3D series"
        )
    return files


def _unreadable_dicom_files(folder: Path, series: list[str]) -> list[Path]:
    """DICOM files (preamble 'DICM') that GDCM left out of the series. GDCM silently skips
    a truncated or damaged slice, so without this check the scan would lose a slice."""
    in_series = {Path(f).resolve() for f in series}
    stray = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.upper() == "DICOMDIR" or not path.is_file():
            continue
        if path.resolve() in in_series:
            continue
        with path.open("rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                stray.append(path)
    return stray


def _check_slice_positions(reader, image, folder: Path) -> None:
    """Refuse duplicate or unevenly spaced slices (a second series, or missing files)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    normal = direction[:, 2]
    positions = []
    for i in range(image.GetSize()[2]):
        if not reader.HasMetaDataKey(i, IMAGE_POSITION_TAG):
            return  # no positions recorded: nothing to check against
        values = reader.GetMetaData(i, IMAGE_POSITION_TAG).replace(" ", "").split("\\")
        positions.append([float(v) for v in values])
    along = np.asarray(positions) @ normal
    gaps = np.diff(along)
    step = float(np.median(gaps))
    if step <= 1e-3 or np.abs(gaps - step).max() > max(0.05 * step, 1e-2):
        raise AmosegError(
            "DICOM slices are duplicated or unevenly spaced "
            f"(gaps {gaps.min():.3g}..{gaps.max():.3g} mm)",
            folder,
            "the folder may mix series or miss slices; keep one complete series per folder",
        )


def load_dicom_series(folder: str | Path) -> nib.Nifti1Image:
    """One DICOM series folder → a 3D NIfTI image (HU after rescale) with a RAS affine.

    qform and sform both hold that affine with code 1 (scanner coordinates).
    """
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise AmosegError("DICOM series path is not a folder", folder)
    files = dicom_series_files(folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else "unknown"
        raise AmosegError(
            f"DICOM series cannot be read ({first})", folder, "check the files are complete"
        ) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise AmosegError(
            "DICOM series is not a single-channel 3D volume", folder, "amoseg segments CT/MR"
        )
    _check_slice_positions(reader, image, folder)
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (Z, Y, X) → (X, Y, Z)
    affine = lps_to_ras_affine(image.GetDirection(), image.GetSpacing(), image.GetOrigin())
    out = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    out.header.set_xyzt_units("mm", "sec")
    return out
