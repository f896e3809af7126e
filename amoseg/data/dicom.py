"""Reading a DICOM CT series into a NIfTI image in RAS world coordinates.

DICOM places voxels in LPS patient coordinates (x to the patient's left, y to posterior);
NIfTI and nibabel use RAS. The voxel array is kept in the order SimpleITK reads it (column,
row, slice sorted along the slice normal) and only the affine changes: the RAS affine is the
LPS affine with its first two rows negated. SimpleITK (GDCM) is used because real series
are often JPEG-2000 compressed, which pydicom cannot decode without extra plugins.

Which files form the series (nested folders, a .zip, outputs and SEGs beside the slices) is
`amoseg.data.dicom_find`'s job. Geometry that cannot be trusted is refused rather than
guessed: no PixelSpacing (GDCM would assume 1 mm), a sheared ImageOrientationPatient (ITK
would fall back to an axis-aligned grid), slices unevenly spaced; a gantry tilt is resampled.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.data.dicom_find import choose_series, dicom_folder, find_series, is_zip_path
from amoseg.errors import AmosegError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
IMAGE_POSITION_TAG = "0020|0032"
ORIENTATION_TAG = "0020|0037"
PIXEL_SPACING_TAG = "0028|0030"
IMAGER_SPACING_TAG = "0018|1164"
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


def dicom_series_files(folder: str | Path, series_uid: str | None = None) -> list[str]:
    """The files of the DICOM series to read under `folder`, sorted along the slice normal.

    Nested folders are searched; amoseg's own outputs, non-image DICOM objects (a SEG) and
    non-DICOM files are left out (`amoseg.data.dicom_find`). Several series: `series_uid`
    chooses, else the only CT series is taken (with a warning), else the input is refused
    with the list: silently picking one would segment the wrong scan.
    """
    folder = Path(folder)
    found, damaged = find_series(folder)
    if not found:
        if damaged:
            raise AmosegError(
                f"{len(damaged)} DICOM file(s) cannot be read",
                damaged[0],
                "the file may be truncated or damaged; re-copy or re-export the series",
            )
        raise AmosegError(
            "no DICOM series found in folder",
            folder,
            "pass a folder holding one DICOM series, or a .nii/.nii.gz file",
        )
    chosen, note = choose_series(folder, found, series_uid)
    if note:
        warnings.warn(note, stacklevel=2)
    parents = {path.parent for path in chosen.files}
    files = _gdcm_sorted(chosen.files + [p for p in damaged if p.parent in parents], folder)
    if len(files) < 2:
        raise AmosegError(
            f"DICOM series has {len(files)} slice(s)", folder, "amoseg needs a 3D series"
        )
    return files


def _gdcm_sorted(paths: list[Path], folder: Path) -> list[str]:
    """`paths` in GDCM's slice order (along the normal), read through a private folder of
    links so GDCM sees exactly these files; a file GDCM leaves out (truncated, damaged)
    is refused by name."""
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    with tempfile.TemporaryDirectory(prefix="amoseg_series_") as tmp:
        links = {}
        for n, path in enumerate(paths):
            link = Path(tmp) / f"{n:06d}.dcm"
            link.symlink_to(path.resolve())
            links[str(link)] = path
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(tmp)
        names = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(tmp, ids[0])) if ids else []
        if len(ids) > 1:  # same SeriesInstanceUID, but GDCM splits it (e.g. image size)
            names = max(
                (sitk.ImageSeriesReader.GetGDCMSeriesFileNames(tmp, i) for i in ids), key=len
            )
        files = [links[name] for name in names if name in links]
    stray = sorted(set(paths) - set(files))
    if stray:
        raise AmosegError(
            f"{len(stray)} DICOM file(s) in the folder cannot be read as part of the series",
            stray[0],
            "the file may be truncated or damaged; re-copy or re-export the series",
        )
    return [str(path) for path in files]


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


def load_dicom_series(path: str | Path, series_uid: str | None = None) -> nib.Nifti1Image:
    """A DICOM series (a folder, nested folders or a `.zip`) → a 3D NIfTI image (HU after
    rescale) with a RAS affine; `series_uid` chooses among several series.

    qform and sform both hold that affine with code 1 (scanner coordinates).
    """
    path = Path(path)
    if not path.is_dir() and not (is_zip_path(path) and path.is_file()):
        raise AmosegError("DICOM series path is not a folder or a .zip", path)
    with dicom_folder(path) as folder:
        try:
            return _load_series(folder, series_uid)
        except AmosegError as exc:
            if folder == path:
                raise
            # paths inside the unpacked archive mean nothing to the user: name the .zip
            raise AmosegError(exc.what, path, exc.hint) from exc


def _load_series(folder: Path, series_uid: str | None) -> nib.Nifti1Image:
    import SimpleITK as sitk

    files = dicom_series_files(folder, series_uid)
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
    spacing = list(image.GetSpacing())
    spacing[:2] = _pixel_spacing(reader, folder, spacing[:2])
    _check_orientation(reader, image, folder)
    positions = _slice_positions(reader, image, folder)
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (Z, Y, X) → (X, Y, Z)
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


def _tag_floats(reader, tag: str, count: int, positive: bool = True) -> list[float] | None:
    """The first slice's values of a numeric multi-valued tag; None if absent or malformed
    (or, with `positive`, not all > 0)."""
    if not reader.HasMetaDataKey(0, tag):
        return None
    try:
        values = [float(v) for v in reader.GetMetaData(0, tag).replace(" ", "").split("\\")]
    except ValueError:
        return None
    ok = len(values) == count and bool(np.isfinite(values).all())
    return values if ok and (not positive or min(values) > 0) else None


def _pixel_spacing(reader, folder: Path, itk: list[float]) -> list[float]:
    """(column, row) spacing in mm. Without PixelSpacing GDCM silently assumes 1 mm, which
    would make every organ volume wrong: ImagerPixelSpacing (the detector's, as projection
    modalities record it) is used with a warning, and a series with neither is refused."""
    if _tag_floats(reader, PIXEL_SPACING_TAG, 2) is not None:
        return itk
    imager = _tag_floats(reader, IMAGER_SPACING_TAG, 2)
    if imager is None:
        raise AmosegError(
            "DICOM series has no PixelSpacing (0028,0030), so its voxel size is unknown",
            folder,
            "re-export the series with its pixel spacing, or convert it to NIfTI with the "
            "right spacing",
        )
    row, col = imager
    warnings.warn(
        f"{folder.name}: DICOM series has no PixelSpacing; using ImagerPixelSpacing "
        f"{row:g} x {col:g} mm (at the detector, not the patient: volumes may be off)",
        stacklevel=3,
    )
    return [col, row]


def _check_orientation(reader, image, folder: Path) -> None:
    """Refuse an ImageOrientationPatient whose row and column directions are not unit
    length or not perpendicular: ITK then falls back to an axis-aligned grid, which would
    put every voxel in the wrong place."""
    iop = _tag_floats(reader, ORIENTATION_TAG, 6, positive=False)
    if iop is None:
        raise AmosegError(
            "DICOM series has no valid ImageOrientationPatient (0020,0037)",
            folder,
            "the slices' orientation is unknown; re-export the series",
        )
    col, row = np.asarray(iop[:3]), np.asarray(iop[3:])
    angle = float(np.degrees(np.arccos(np.clip(col @ row, -1.0, 1.0))))
    if abs(np.linalg.norm(col) - 1) > 1e-3 or abs(np.linalg.norm(row) - 1) > 1e-3:
        problem = "direction cosines that are not unit vectors"
    elif abs(col @ row) > 1e-3:
        problem = f"row and column directions {angle:.1f}° apart, not 90°"
    else:
        direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
        if np.allclose(direction[:, 0], col, atol=1e-3) and np.allclose(
            direction[:, 1], row, atol=1e-3
        ):
            return
        problem = "an orientation the reader did not apply"
    raise AmosegError(
        f"DICOM series has an ImageOrientationPatient with {problem} (a sheared grid "
        "amoseg cannot place)",
        folder,
        "re-export or resample the series to an orthogonal grid",
    )
