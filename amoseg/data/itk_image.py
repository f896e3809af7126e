"""Reading `.nrrd`, `.mha` and `.mhd` scans (SimpleITK) into the NIfTI form amoseg works in.

ITK describes geometry in LPS world coordinates (x to the patient's left, y to posterior);
nibabel, and so the rest of amoseg, in RAS. The voxels keep ITK's (column, row, slice)
order as (X, Y, Z) and the affine is the LPS one with its first two rows negated, exactly as
for DICOM (`amoseg.data.dicom.lps_to_ras_affine`): the same volume saved as `.nii.gz` and as
`.nrrd` gives the same array and affine.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.errors import AmosegError

ITK_SUFFIXES = (".nrrd", ".mha", ".mhd")
# gzip/zlib cannot compress better than ~1032:1: a header promising more voxels than that
# is damaged, and is refused before anything is allocated (as for NIfTI)
MAX_RATIO = 1100


def is_itk_path(path: Path) -> bool:
    return path.name.lower().endswith(ITK_SUFFIXES)


def _data_bytes_on_disk(path: Path) -> int:
    """Bytes that can hold the voxels: the file, plus a `.mhd`'s separate data file."""
    size = path.stat().st_size
    if path.name.lower().endswith(".mhd"):
        for line in path.read_text(errors="replace").splitlines()[:64]:
            key, _, value = line.partition("=")
            if key.strip() == "ElementDataFile" and value.strip() not in ("LOCAL", ""):
                data = path.parent / value.strip()
                if data.is_file():
                    size += data.stat().st_size
    return size


def load_itk_image(path: str | Path) -> nib.Nifti1Image:
    """A 3D single-channel `.nrrd` / `.mha` / `.mhd` → NIfTI image with a RAS affine."""
    import SimpleITK as sitk

    from amoseg.data.dicom import lps_to_ras_affine

    path = Path(path)
    if not path.is_file():
        raise AmosegError("image file not found", path)
    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        size = tuple(int(n) for n in reader.GetSize())
        components = int(reader.GetNumberOfComponents())
        pixel = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    except RuntimeError as exc:
        raise AmosegError(_reason("image file cannot be read", exc), path, "re-export it") from exc
    if len(size) == 4 and size[3] == 1:
        size = size[:3]
    if len(size) != 3 or components != 1:
        raise AmosegError(
            f"image must be a single-channel 3D volume, got size {size} with "
            f"{components} component(s)",
            path,
            "amoseg segments single 3D scans",
        )
    nbytes = int(np.prod(size, dtype=object)) * 8
    if nbytes > MAX_RATIO * _data_bytes_on_disk(path) + (1 << 20):
        raise AmosegError(
            f"image header promises {size} voxels, more than the file can hold",
            path,
            "the file is truncated or its header damaged; re-export it",
        )
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise AmosegError(_reason("image file cannot be read", exc), path, "re-export it") from exc
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    if "complex" in pixel or "label" in pixel:
        raise AmosegError(f"image has unsupported voxel type {pixel}", path)
    data = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (Z, Y, X) → (X, Y, Z)
    affine = lps_to_ras_affine(image.GetDirection(), image.GetSpacing(), image.GetOrigin())
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise AmosegError("image has an invalid orientation (NaN or zero voxel size)", path)
    out = nib.Nifti1Image(np.ascontiguousarray(data), affine)
    out.set_qform(affine, code=1)
    out.set_sform(affine, code=1)
    out.header.set_xyzt_units("mm", "sec")
    return out


def _reason(what: str, exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return f"{what} ({' '.join(lines[-1].split())[:120] if lines else type(exc).__name__})"
