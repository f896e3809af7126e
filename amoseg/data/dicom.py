"""Reading a DICOM CT series into a NIfTI image in RAS world coordinates.

DICOM places voxels in LPS patient coordinates (x to the patient's left, y to posterior);
NIfTI and nibabel use RAS. The voxel array is kept in the order SimpleITK reads it (column,
row, slice sorted along the slice normal) and only the affine changes: the RAS affine is the
LPS affine with its first two rows negated. SimpleITK (GDCM) is used because real series
are often JPEG-2000 compressed, which pydicom cannot decode without extra plugins.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.errors import AmosegError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
IMAGE_POSITION_TAG = "0020|0032"
# A shear that moves the last slice by less than this is rounding in the positions, not tilt.
MAX_UNTILTED_SHIFT_VOXELS = 0.05
MAX_TILT_DEG = 45.0  # CT gantries tilt up to about ±30°


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


def _slice_positions(reader, image, folder: Path) -> np.ndarray | None:
    """Each slice's ImagePositionPatient (LPS mm, in the reader's order); None if not
    recorded. Refuses duplicate or unevenly spaced slices (a second series, or missing
    files)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    normal = direction[:, 2]
    positions = []
    for i in range(image.GetSize()[2]):
        if not reader.HasMetaDataKey(i, IMAGE_POSITION_TAG):
            return None  # no positions recorded: nothing to check against
        values = reader.GetMetaData(i, IMAGE_POSITION_TAG).replace(" ", "").split("\\")
        try:
            positions.append([float(v) for v in values])
        except ValueError:
            return None
    if any(len(p) != 3 for p in positions):
        return None
    positions = np.asarray(positions)
    gaps = np.diff(positions @ normal)
    step = float(np.median(gaps))
    tolerance = max(0.05 * step, 1e-2)
    if step <= 1e-3 or np.abs(gaps - step).max() > tolerance:
        raise AmosegError(
            "DICOM slices are duplicated or unevenly spaced "
            f"(gaps {gaps.min():.3g}..{gaps.max():.3g} mm)",
            folder,
            "the folder may mix series or miss slices; keep one complete series per folder",
        )
    steps = np.diff(positions, axis=0)  # a gantry tilt shifts every slice by the same step
    sideways = float(np.linalg.norm(steps - np.median(steps, axis=0), axis=1).max())
    if sideways > tolerance:
        raise AmosegError(
            f"DICOM slice origins shift sideways unevenly (by up to {sideways:.3g} mm), "
            "not as one gantry tilt",
            folder,
            "the folder may mix series; keep one complete series per folder",
        )
    return positions


def _untilt(
    data: np.ndarray, spacing: tuple[float, ...], direction: np.ndarray, positions: np.ndarray
) -> tuple[np.ndarray, float, float]:
    """Resample a gantry-tilted series onto the upright grid its slices span.

    A tilted gantry writes slices whose origins step along the table, not along the slice
    normal, so the true voxel grid is sheared; ITK assumes an upright one, with the full
    step between origins as the slice spacing (too large by 1/cos(tilt)) and every slice
    at the wrong place. Each slice is shifted in-plane by its share of the shear (linear
    interpolation, the series' minimum outside), as dcm2niix does. Returns the
    volume, the true slice spacing along the normal (mm) and the tilt angle (degrees); an
    untilted series comes back unchanged.
    """
    step = np.median(np.diff(positions, axis=0), axis=0)
    col, row, normal = direction[:, 0], direction[:, 1], direction[:, 2]
    along = float(step @ normal)
    shear = np.array([step @ col / spacing[0], step @ row / spacing[1]])  # voxels per slice
    angle = float(np.degrees(np.arctan2(np.linalg.norm(step - along * normal), along)))
    if np.abs(shear).max() * (data.shape[2] - 1) < MAX_UNTILTED_SHIFT_VOXELS:
        return data, along, 0.0
    if angle > MAX_TILT_DEG:
        raise AmosegError(
            f"DICOM slices are sheared by {angle:.1f}° (more than a gantry tilts)",
            hint="the positions look inconsistent; re-export the series",
        )
    from scipy import ndimage

    fill = float(data.min())
    out = np.empty_like(data)
    for k in range(data.shape[2]):
        moved = ndimage.shift(
            data[:, :, k].astype(np.float32), k * shear, order=1, mode="constant", cval=fill
        )
        out[:, :, k] = np.rint(moved) if np.issubdtype(data.dtype, np.integer) else moved
    return out, along, angle


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
    positions = _slice_positions(reader, image, folder)
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (Z, Y, X) → (X, Y, Z)
    spacing = list(image.GetSpacing())
    tilt = 0.0
    if positions is not None:
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        try:
            data, spacing[2], tilt = _untilt(data, spacing, direction, positions)
        except AmosegError as exc:
            raise AmosegError(exc.what, folder, exc.hint) from exc
    affine = lps_to_ras_affine(image.GetDirection(), spacing, image.GetOrigin())
    out = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    out.header.set_xyzt_units("mm", "sec")
    if tilt:
        note = f"gantry tilt {tilt:.1f} deg resampled upright"
        out.header["descrip"] = note.encode()
        warnings.warn(f"{folder.name}: DICOM series has a {note}", stacklevel=2)
    return out
