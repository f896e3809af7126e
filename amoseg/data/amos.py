"""The AMOS22 layout: which labelled scans an AMOS download lists, and header pre-flight checks.

AMOS ships a `dataset.json` whose "training" and "validation" lists hold every labelled scan
(360 in the real release) as paths like "./imagesTr/amos_0001.nii.gz". Folders copied without
it are scanned instead (imagesTr/labelsTr, imagesVa/labelsVa, imagesTs/labelsTs, matched by
file name). AMOS's test labels are not public, so its "test" entries carry no label and are
skipped; a test entry that does name a label (e.g. a synthetic set) is a labelled case too.
nnU-Net v1 task folders use the same lists (with `case_0000.nii.gz` files on disk) and are
read here too.

`amoseg.data.datasets.find_cases` picks the layout (this one or nnU-Net's) and turns the
`Listing` read here into `AmosCase`s (ids, paths, modality and label set checked).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.atomic import read_json
from amoseg.data.nifti import case_id_of, is_nifti_path, label_array, load_nifti, pixdim_note
from amoseg.errors import AmosegError

LABELLED_LISTS = ("training", "validation")
OPTIONAL_LISTS = ("test",)  # used only for entries that name a label file
LABELLED_FOLDERS = (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa"), ("imagesTs", "labelsTs"))
# Image and label grids must agree to well under a voxel; AMOS stores affines as float32.
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class AmosCase:
    """One labelled scan in AMOS terms: its id, image and label files, modality ('ct' or
    'mr', and which rule gave it), and `label_lut` mapping the file's label ids to AMOS ids
    (None: the file holds AMOS ids already)."""

    case_id: str
    image: Path
    label: Path
    modality: str
    label_lut: tuple[int, ...] | None = None
    modality_source: str = ""


@dataclass(frozen=True)
class CaseEntry:
    """A labelled scan as a layout lists it, before ids, paths and modality are checked."""

    case_id: str
    image: Path
    label: Path
    modality: object = None  # the entry's own modality field, if it has one
    written: str = ""  # how the listing wrote the image path (for error messages)
    written_label: str = ""


def dataset_is_synthetic(root: str | Path) -> bool:
    """True when the root's dataset.json says amoseg synthesised it (`amoseg_synthetic`):
    prepare carries the flag into the store and train into the run, so a model trained on
    phantoms says so wherever it is used."""
    listing = Path(root) / "dataset.json"
    if not listing.exists():
        return False
    spec = read_json(listing, "dataset.json")
    return isinstance(spec, dict) and spec.get("amoseg_synthetic") is True


@dataclass(frozen=True)
class Listing:
    """What a layout reader found: its cases and the dataset-wide fields that give them
    meaning (the modality field and the label set, as written)."""

    layout: str
    source: Path  # dataset.json, or the root for a folder scan
    entries: list[CaseEntry] = field(default_factory=list)
    modality: object = None
    labels: object = None


def read_amos_listing(root: Path, spec: dict | None, listing: Path) -> Listing:
    """The AMOS layout: dataset.json's lists when there is one, else the folders by name."""
    if spec is None:
        return Listing("amos", root, _from_folders(root))
    if not any(key in spec for key in LABELLED_LISTS):
        raise AmosegError(
            "dataset.json has no 'training' or 'validation' list",
            listing,
            "is this an AMOS22 or nnU-Net dataset.json?",
        )
    return Listing(
        "amos", listing, _from_lists(root, spec, listing), spec.get("modality"), spec.get("labels")
    )


def _from_lists(root: Path, spec: dict, listing: Path) -> list[CaseEntry]:
    cases = []
    for key in LABELLED_LISTS + OPTIONAL_LISTS:
        entries = spec.get(key) or []
        if not isinstance(entries, list):
            raise AmosegError(f"dataset.json '{key}' is not a list", listing)
        for n, entry in enumerate(entries):
            if key in OPTIONAL_LISTS and not (isinstance(entry, dict) and "label" in entry):
                continue  # an unlabelled test scan
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("image"), str)
                and isinstance(entry.get("label"), str)
            ):
                raise AmosegError(
                    f"dataset.json '{key}' entry {n} lacks an 'image' or 'label' path",
                    listing,
                    'entries look like {"image": "./imagesTr/amos_0001.nii.gz", "label": ...}',
                )
            for what in ("image", "label"):
                if "\x00" in entry[what] or not is_nifti_path(Path(entry[what])):
                    raise AmosegError(
                        f"dataset.json '{key}' entry {n}: {what} is not a .nii/.nii.gz path",
                        listing,
                        'entries look like {"image": "./imagesTr/amos_0001.nii.gz", "label": ...}',
                    )
            listed = root / entry["image"]
            cases.append(
                CaseEntry(
                    case_id_of(listed),
                    _listed_image(listed),
                    root / entry["label"],
                    entry.get("modality"),
                    entry["image"],
                    entry["label"],
                )
            )
    return cases


def _listed_image(image: Path) -> Path:
    """nnU-Net v1 (and converted MSD) listings name `imagesTr/case.nii.gz` while the file on
    disk is its first channel, `imagesTr/case_0000.nii.gz`: take that file when only it
    exists (the case keeps the listed name)."""
    if image.exists():
        return image
    case_id = case_id_of(image)
    channel = image.with_name(f"{case_id}_0000{image.name[len(case_id) :]}")
    return channel if channel.exists() else image


def _from_folders(root: Path) -> list[CaseEntry]:
    cases = []
    for image_dir, label_dir in LABELLED_FOLDERS:
        if not (root / image_dir).is_dir():
            continue
        labels = {}
        if (root / label_dir).is_dir():
            labels = {case_id_of(p): p for p in (root / label_dir).iterdir() if is_nifti_path(p)}
        for image in sorted((root / image_dir).iterdir()):
            if image.name.startswith(".") or not is_nifti_path(image):
                continue
            case_id = case_id_of(image)
            label = labels.get(case_id)
            if label is not None:
                written = (f"{image_dir}/{image.name}", f"{label_dir}/{label.name}")
                cases.append(CaseEntry(case_id, image, label, None, *written))
    return cases


def check_case_files(case: AmosCase) -> list[str]:
    """Cheap pre-flight from headers only: files exist, are NIfTI, and share one voxel grid.

    Catches most bad inputs before anything is written; truncation deep inside a file and
    bad voxel values only show when the voxels are read, in `prepare`. Returns one-line
    notes (the image's pixdim disagreeing with its affine).
    """
    headers = []
    notes = []
    for path, what in ((case.image, "image"), (case.label, "label")):
        if not path.exists():
            raise AmosegError(f"{what} file listed for {case.case_id} is missing", path)
        try:
            img = nib.load(str(path))
            shape = tuple(int(n) for n in img.header.get_data_shape())
            affine = np.asarray(img.affine, dtype=np.float64)
            note = pixdim_note(img, path) if what == "image" else None
        except Exception:
            load_nifti(path, what)  # raises the precise one-line error for this file
            raise  # pragma: no cover - nibabel failed once but loads on retry
        headers.append((shape[:3] if shape[3:] in ((), (1,)) else shape, affine))
        if note:
            notes.append(f"{case.case_id}: {note}")
    check_same_grid(case, headers[0][0], headers[0][1], headers[1][0], headers[1][1])
    return notes


def check_same_grid(
    case: AmosCase,
    image_shape: tuple[int, ...],
    image_affine: np.ndarray,
    label_shape: tuple[int, ...],
    label_affine: np.ndarray,
) -> None:
    """A label map drawn on another grid would misalign every organ: refuse it."""
    if tuple(image_shape) != tuple(label_shape):
        raise AmosegError(
            f"image shape {tuple(image_shape)} and label shape {tuple(label_shape)} differ",
            case.label,
            f"the label must be drawn on {case.image.name}",
        )
    if not np.allclose(image_affine, label_affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
        worst = float(np.abs(np.asarray(image_affine) - np.asarray(label_affine)).max())
        raise AmosegError(
            f"image and label affines differ (by up to {worst:.4g} mm)",
            case.label,
            f"the label must share {case.image.name}'s voxel grid",
        )


def open_case(case: AmosCase) -> tuple[np.ndarray, nib.Nifti1Image]:
    """(uint8 AMOS-id label, the image's NIfTI, header read, voxels not yet) of a case whose
    grids agree. The label comes first and its file array is dropped before the image is
    opened: AMOS labels are uint16 on disk, as large as an int16 image."""
    label_nii = load_nifti(case.label, "label")
    label_shape, label_affine = label_nii.shape, label_nii.affine
    label = label_array(label_nii, case.label, case.label_lut)
    del label_nii
    image_nii = load_nifti(case.image, "image")
    check_same_grid(case, image_nii.shape, image_nii.affine, label_shape, label_affine)
    return label, image_nii
