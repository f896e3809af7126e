"""What `amoseg predict` accepts: NIfTI (.nii/.nii.gz), NRRD and MetaImage (.nrrd/.mha/.mhd)
files, folders of them, DICOM series folders (nested PACS exports too) and DICOM `.zip`s."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from amoseg.data.dicom import load_dicom_series
from amoseg.data.dicom_find import check_zip, is_amoseg_output, is_zip_path
from amoseg.data.itk_image import is_itk_path, load_itk_image
from amoseg.data.nifti import case_id_of, image_voxels, is_nifti_path, load_nifti, pixdim_note
from amoseg.errors import AmosegError


@dataclass(frozen=True)
class ScanInput:
    """One scan to segment: a NIfTI file, an ITK file (.nrrd/.mha/.mhd), or a DICOM series
    (a folder or .zip; `series`: the SeriesInstanceUID chosen with --series); `name` names
    the outputs."""

    path: Path
    kind: Literal["nifti", "itk", "dicom"]
    name: str
    series: str | None = None


@dataclass
class Scan:
    """A loaded scan: the image (header and affine kept for the output) and its voxels in
    their stored dtype (int16 CT stays int16: half the bytes to move to a GPU)."""

    source: ScanInput
    image: nib.Nifti1Image
    data: np.ndarray
    notes: list[str] = field(default_factory=list)  # one-line warnings about the input


#: the name suffix of the label maps `amoseg predict` writes (`<name>_seg.nii.gz`).
SEG_SUFFIX = "_seg"
_NIFTI_INTENT_LABEL = 1002


def is_label_map(path: Path) -> bool:
    """True for an image file that is a label map rather than a scan: our own outputs
    (`*_seg.nii.gz`, `*_seg.nrrd`, or amoseg's NIfTI header description) and NIfTIs whose
    header says "label".

    A folder given as input may be the previous run's output folder or hold a user's labels
    beside the scans; segmenting those as scans would be wrong and could overwrite them.
    """
    if case_id_of(path).endswith(SEG_SUFFIX):
        return True
    if not is_nifti_path(path):
        return False
    try:
        header = nib.load(str(path)).header
        intent = int(header.get("intent_code", 0))
        descrip = bytes(header.get("descrip", b"")).lower()
    except Exception:  # unreadable: a scan to the reader, which reports it in one line
        return False
    return intent == _NIFTI_INTENT_LABEL or descrip.startswith(b"amoseg")


#: nnU-Net names a case's images `<case>_<channel>` (`case_0000.nii.gz`: channel 0)
_CHANNEL = re.compile(r"(.+)_(\d{4})")


def _scan_name(path: Path) -> str:
    """The name a scan's outputs carry: its file name without the ending, and without
    nnU-Net's channel suffix `_0000`, so `case_0000.nii.gz` gives `case_seg.nii.gz` and
    `amoseg score` matches it to `labelsTr/case.nii.gz`."""
    name = case_id_of(path) if is_nifti_path(path) else path.name.rsplit(".", 1)[0]
    match = _CHANNEL.fullmatch(name)
    if match is None:
        return name
    case, channel = match.group(1), int(match.group(2))
    if channel == 0:
        return case
    ending = path.name[len(name) :]
    if (path.parent / f"{case}_0000{ending}").exists():  # other channels of an nnU-Net case
        raise AmosegError(
            f"image file is input channel {channel} of nnU-Net case {case!r}",
            path,
            "amoseg models take one channel: pass only the case's _0000 file",
        )
    return name  # e.g. amos_0001.nii.gz: a case id, not a channel


def _file_input(path: Path) -> ScanInput:
    if is_nifti_path(path):
        return ScanInput(path, "nifti", _scan_name(path))
    if is_itk_path(path):
        return ScanInput(path, "itk", _scan_name(path))
    if is_zip_path(path):
        check_zip(path)
        return ScanInput(path, "dicom", path.name[: -len(".zip")])
    raise AmosegError(
        "input is not a .nii/.nii.gz file (nor .nrrd, .mha, .mhd or a DICOM .zip)",
        path,
        "pass image files, folders of them, or a DICOM series folder or .zip",
    )


def expand_input(path: str | Path, series: str | None = None) -> list[ScanInput]:
    """A file → itself; a folder → its image files (not recursive; label maps such as
    `*_seg.nii.gz` are left out), or else the DICOM series it holds (searched in nested
    folders; `series` chooses one of several). Raises AmosegError for a missing path, an
    empty folder or another file."""
    path = Path(path)
    if not path.exists():
        raise AmosegError("input not found", path)
    if path.is_file():
        item = _file_input(path)
        return [ScanInput(item.path, item.kind, item.name, series)] if is_zip_path(path) else [item]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if not entries:
        raise AmosegError("input folder is empty", path)
    images = [p for p in entries if p.is_file() and (is_nifti_path(p) or is_itk_path(p))]
    scans = [p for p in images if not is_label_map(p)]
    if scans:
        return [_file_input(p) for p in scans]
    others = [p for p in entries if p not in images and not is_amoseg_output(p.name)]
    if images and not others:  # beside DICOM slices, label maps are earlier outputs
        raise AmosegError(
            "input folder holds only label maps (*_seg.nii.gz or NIfTI label intent), no scans",
            path,
            "pass a scan by its file name to segment it anyway",
        )
    return [ScanInput(path, "dicom", path.resolve().name, series)]


def unique_names(items: list[ScanInput]) -> list[ScanInput]:
    """Suffix repeated names (`ct`, `ct_2`, ...) so no scan overwrites another's outputs.

    Deterministic in the input order; a suffix never takes a name another input has of its
    own (`a/ct`, `b/ct`, `c/ct_2` → `ct`, `ct_3`, `ct_2`). Names are compared case-blind, as
    on macOS and Windows file systems.
    """
    taken = {item.name.casefold() for item in items}
    used: set[str] = set()
    out = []
    for item in items:
        name = item.name
        if name.casefold() in used:
            n = 2
            while f"{name}_{n}".casefold() in taken or f"{name}_{n}".casefold() in used:
                n += 1
            name = f"{name}_{n}"
        used.add(name.casefold())
        out.append(item if name == item.name else replace(item, name=name))
    return out


def load_scan(item: ScanInput) -> Scan:
    """Read and validate one scan (3D, finite voxels); what the readers warn about (a
    resampled gantry tilt, a pixdim that disagrees with the affine) becomes `notes`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if item.kind == "dicom":
            image = load_dicom_series(item.path, item.series)
        elif item.kind == "itk":
            image = load_itk_image(item.path)
        else:
            image = load_nifti(item.path)
    notes = [" ".join(str(w.message).split()) for w in caught]
    if item.kind == "nifti" and (note := pixdim_note(image, item.path)):
        notes.append(note)
    data = image_voxels(image, item.path)  # float voxels: full precision, NaN/Inf refused
    if min(data.shape) < 1:
        raise AmosegError(f"image has an empty axis {data.shape}", item.path)
    return Scan(item, image, data, notes)
