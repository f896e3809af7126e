"""What `amoseg predict` accepts: NIfTI files, folders of them, and DICOM series folders."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from amoseg.data.dicom import load_dicom_series
from amoseg.data.nifti import case_id_of, image_voxels, is_nifti_path, load_nifti, pixdim_note
from amoseg.errors import AmosegError


@dataclass(frozen=True)
class ScanInput:
    """One scan to segment: a NIfTI file or a DICOM series folder; `name` names the outputs."""

    path: Path
    kind: Literal["nifti", "dicom"]
    name: str


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
    """True for a NIfTI that is a label map rather than a scan: our own outputs
    (`*_seg.nii.gz`, or amoseg's header description) and files whose header says "label".

    A folder given as input may be the previous run's output folder or hold a user's labels
    beside the scans; segmenting those as scans would be wrong and could overwrite them.
    """
    if case_id_of(path).endswith(SEG_SUFFIX):
        return True
    try:
        header = nib.load(str(path)).header
        intent = int(header.get("intent_code", 0))
        descrip = bytes(header.get("descrip", b"")).lower()
    except Exception:  # unreadable: a scan to the reader, which reports it in one line
        return False
    return intent == _NIFTI_INTENT_LABEL or descrip.startswith(b"amoseg")


def expand_input(path: str | Path) -> list[ScanInput]:
    """A file → itself; a folder → its .nii/.nii.gz scans (not recursive; label maps such as
    `*_seg.nii.gz` are left out), or else the DICOM series it holds. Raises AmosegError for a
    missing path, an empty folder or another file."""
    path = Path(path)
    if not path.exists():
        raise AmosegError("input not found", path)
    if path.is_file():
        if not is_nifti_path(path):
            raise AmosegError(
                "input is not a .nii/.nii.gz file",
                path,
                "pass NIfTI files, folders of them, or a DICOM series folder",
            )
        return [ScanInput(path, "nifti", case_id_of(path))]
    entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    if not entries:
        raise AmosegError("input folder is empty", path)
    niftis = [p for p in entries if p.is_file() and is_nifti_path(p)]
    scans = [p for p in niftis if not is_label_map(p)]
    if scans:
        return [ScanInput(p, "nifti", case_id_of(p)) for p in scans]
    if niftis:
        raise AmosegError(
            "input folder holds only label maps (*_seg.nii.gz or NIfTI label intent), no scans",
            path,
            "pass a scan by its file name to segment it anyway",
        )
    return [ScanInput(path, "dicom", path.resolve().name)]


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
        out.append(item if name == item.name else ScanInput(item.path, item.kind, name))
    return out


def load_scan(item: ScanInput) -> Scan:
    """Read and validate one scan (3D, finite voxels); what the readers warn about (a
    resampled gantry tilt, a pixdim that disagrees with the affine) becomes `notes`."""
    loader = load_dicom_series if item.kind == "dicom" else load_nifti
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = loader(item.path)
    notes = [" ".join(str(w.message).split()) for w in caught]
    if item.kind == "nifti" and (note := pixdim_note(image, item.path)):
        notes.append(note)
    data = image_voxels(image, item.path)  # float voxels: full precision, NaN/Inf refused
    if min(data.shape) < 1:
        raise AmosegError(f"image has an empty axis {data.shape}", item.path)
    return Scan(item, image, data, notes)
