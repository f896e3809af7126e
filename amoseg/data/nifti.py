"""Reading and writing NIfTI volumes with one-line errors for every way a file can be bad.

Real AMOS files vary: int16/int32/float images, uint8 or uint16 labels, LAS or RAS
orientations. We validate once, at the edge, so the rest of amoseg receives clean arrays.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.atomic import atomic_path
from amoseg.errors import AmosegError
from amoseg.labels import NUM_CLASSES

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# pixdim is float32 in the header; affines round-trip through float32 too.
PIXDIM_RTOL, PIXDIM_ATOL_MM = 1e-4, 1e-4


def is_nifti_path(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def case_id_of(path: Path) -> str:
    """'amos_0001' from '.../amos_0001.nii.gz'."""
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_nifti(path: str | Path, what: str = "image") -> nib.Nifti1Image:
    """Open a 3D NIfTI and read its voxels now, so truncation is caught here, not later.

    A 4D file with a single volume (X, Y, Z, 1) is accepted and squeezed to 3D.
    """
    path = Path(path)
    if not path.exists():
        raise AmosegError(f"{what} file not found", path)
    if path.is_dir():
        raise AmosegError(f"{what} path is a folder, expected a .nii/.nii.gz file", path)
    if path.stat().st_size == 0:
        raise AmosegError(f"{what} file is empty (0 bytes)", path, "re-download or re-export it")
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise AmosegError(f"{what} file is not a NIfTI image", path)
        _check_header(img, path, what)
        data = np.asanyarray(img.dataobj)
        affine = img.affine
        # a corrupt quaternion fails here (nibabel: "w2 should be positive"), not later
        qform, sform = img.get_qform(), img.get_sform()
    except AmosegError:
        raise
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise AmosegError(
            f"{what} file is truncated or corrupt (bad gzip stream)", path, "re-download it"
        ) from exc
    except nib.filebasedimages.ImageFileError as exc:
        problem = _gzip_problem(path)
        if problem:
            raise AmosegError(f"{what} file {problem}", path, "re-download it") from exc
        raise AmosegError(f"{what} file is not a NIfTI image", path) from exc
    except OSError as exc:  # nibabel: "Expected N bytes, got M bytes ..." = short data block
        reason = " ".join(str(exc).split())[:200]
        raise AmosegError(
            f"{what} file is truncated or corrupt ({reason})", path, "re-download it"
        ) from exc
    except MemoryError as exc:
        raise AmosegError(f"{what} file is too large to load into memory", path) from exc
    except Exception as exc:  # any other parse failure of external bytes is a bad file, not a bug
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise AmosegError(f"{what} file cannot be read ({reason})", path, "re-download it") from exc
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise AmosegError(
            f"{what} file has an invalid orientation matrix (NaN or zero voxel size)",
            path,
            "fix the header (qform/sform) or re-export it",
        )
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise AmosegError(
            f"{what} must be a 3D volume, got {data.ndim}D with shape {tuple(data.shape)}",
            path,
            "amoseg segments single 3D scans",
        )
    out = nib.Nifti1Image(np.asarray(data), affine, img.header)
    out.set_qform(qform, code=int(img.header["qform_code"]))
    out.set_sform(sform, code=int(img.header["sform_code"]))
    return out


def _check_header(img: nib.Nifti1Image, path: Path, what: str) -> None:
    """Refuse a header that promises more voxels than the file can hold, before allocating.

    A corrupt or truncated header can claim e.g. 30000^3 voxels; reading it would try to
    allocate terabytes or fail late. Deflate cannot compress better than ~1032:1, so a .nii.gz
    of N bytes never holds more than ~1100*N bytes of voxels; a plain .nii must hold them all.
    """
    header = img.header
    shape = tuple(int(n) for n in header.get_data_shape())
    dtype = header.get_data_dtype()
    if dtype.fields is not None or dtype.kind not in "biuf":
        raise AmosegError(
            f"{what} has unsupported voxel type {dtype}", path, "expected integer or float voxels"
        )
    if not shape or min(shape) <= 0:
        raise AmosegError(f"{what} file has an empty volume (shape {shape})", path)
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=object))
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        limit = 1100 * size + (1 << 20)
    else:
        limit = size - int(header.get_data_offset())
    if nbytes > limit:
        raise AmosegError(
            f"{what} file is truncated or its header is corrupt (header promises shape {shape}, "
            f"{nbytes} bytes of voxels; the file is {size} bytes)",
            path,
            "re-download or re-export it",
        )


def _gzip_problem(path: Path) -> str | None:
    """Why a .gz file's stream cannot be decompressed, or None if it can (or is not .gz)."""
    if not path.name.lower().endswith(".gz"):
        return None
    with path.open("rb") as fh:
        if fh.read(2) != b"\x1f\x8b":
            return "is not gzip-compressed although its name ends in .gz"
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error):
        return "is truncated or corrupt (bad gzip stream)"
    return None


def image_array(img: nib.Nifti1Image, path: str | Path | None = None) -> np.ndarray:
    """The image voxels as float32, refusing NaN/Inf (they would poison normalisation)."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    _check_finite(data, path)
    return data


def image_voxels(img: nib.Nifti1Image, path: str | Path | None = None) -> np.ndarray:
    """The image voxels at the file's own precision: integer voxels keep their dtype (int16
    CT stays int16), float or scaled voxels become float32, never rounded (an MR scaled to
    [0, 1] keeps its values); NaN/Inf are refused."""
    data = np.asanyarray(img.dataobj)
    if np.issubdtype(data.dtype, np.integer):
        return data
    return image_array(img, path)


def _check_finite(data: np.ndarray, path: str | Path | None) -> None:
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AmosegError(f"image has {bad} NaN/Inf voxels", path, "fix or exclude this scan")


def voxel_spacing(img: nib.Nifti1Image) -> tuple[float, float, float]:
    """Voxel sizes in mm from the affine (the grid every command uses), not from pixdim:
    where a file's sform and pixdim disagree, the affine is where the voxels are."""
    sizes = nib.affines.voxel_sizes(np.asarray(img.affine, dtype=np.float64))
    return float(sizes[0]), float(sizes[1]), float(sizes[2])


def pixdim_note(img: nib.Nifti1Image, path: str | Path) -> str | None:
    """A one-line warning when the header's pixdim disagrees with the affine's voxel sizes
    (a tool rewrote the sform but not pixdim); None when they agree."""
    pixdim = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)
    spacing = np.asarray(voxel_spacing(img))
    if len(pixdim) < 3 or np.allclose(pixdim, spacing, rtol=PIXDIM_RTOL, atol=PIXDIM_ATOL_MM):
        return None
    fmt = ", ".join
    return (
        f"{Path(path).name}: pixdim ({fmt(f'{v:.4g}' for v in pixdim)}) mm disagrees with the "
        f"affine's voxel sizes ({fmt(f'{v:.4g}' for v in spacing)}) mm; using the affine"
    )


def label_array(
    img: nib.Nifti1Image, path: str | Path | None = None, lut: tuple[int, ...] | None = None
) -> np.ndarray:
    """Label voxels as uint8 AMOS ids 0..15 (AMOS ships uint16 on disk; cast once here).

    `lut` maps a dataset's own label ids to AMOS ids (index = file id, -1 = not declared in
    its dataset.json); without it the file must hold AMOS ids already.
    """
    raw = np.asarray(img.dataobj)
    if np.issubdtype(raw.dtype, np.floating) and (
        not np.isfinite(raw).all() or not np.array_equal(raw, np.round(raw))
    ):
        raise AmosegError("label map holds non-integer values", path, "labels must be ids 0..15")
    if lut is not None:
        return _mapped_labels(raw, path, lut)
    if raw.size:
        lo, hi = raw.min(), raw.max()
        if lo < 0 or hi >= NUM_CLASSES:
            raise AmosegError(
                f"label ids outside 0..{NUM_CLASSES - 1} (found {lo}..{hi})",
                path,
                "is this an AMOS label map?",
            )
    return raw.astype(np.uint8)


def _mapped_labels(raw: np.ndarray, path: str | Path | None, lut: tuple[int, ...]) -> np.ndarray:
    """`lut[raw]`, refusing ids that dataset.json does not declare (one byte per voxel)."""
    table = np.asarray(lut, dtype=np.int8)
    if raw.size == 0:
        return raw.astype(np.uint8)
    lo, hi = int(raw.min()), int(raw.max())
    if lo >= 0 and hi < len(table):
        mapped = table[raw if np.issubdtype(raw.dtype, np.integer) else raw.astype(np.int32)]
        if mapped.min() >= 0:
            return mapped.view(np.uint8)
        undeclared = np.unique(raw[mapped < 0])
    else:
        undeclared = np.unique(raw[(raw < 0) | (raw >= len(table))])
    shown = ", ".join(str(int(v)) for v in undeclared[:5])
    declared = ", ".join(str(i) for i, v in enumerate(lut) if v >= 0)
    raise AmosegError(
        f"label ids {shown} are not in dataset.json's labels (declared: {declared})",
        path,
        "fix the label map or the 'labels' entry of dataset.json",
    )


def save_nifti(img: nib.Nifti1Image, target: str | Path) -> None:
    """Write atomically (temp name + rename) so a crash never leaves a half-written file."""
    target = Path(target)
    suffix = ".nii.gz" if target.name.lower().endswith(".gz") else ".nii"
    with atomic_path(target, suffix=suffix) as tmp:
        nib.save(img, str(tmp))
