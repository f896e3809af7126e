"""Reading an AMOS22 download: which scans are labelled, where their files are, which modality.

AMOS ships a `dataset.json` whose "training" and "validation" lists hold every labelled scan
(360 in the real release) as paths like "./imagesTr/amos_0001.nii.gz". Folders copied without
it are scanned instead (imagesTr/labelsTr, imagesVa/labelsVa, imagesTs/labelsTs, matched by
file name). AMOS's test labels are not public, so its "test" entries carry no label and are
skipped; a test entry that does name a label (e.g. a synthetic set) is a labelled case too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.atomic import read_json
from amoseg.data.nifti import case_id_of, is_nifti_path, load_nifti
from amoseg.errors import AmosegError
from amoseg.labels import modality_of

LABELLED_LISTS = ("training", "validation")
OPTIONAL_LISTS = ("test",)  # used only for entries that name a label file
LABELLED_FOLDERS = (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa"), ("imagesTs", "labelsTs"))
# Image and label grids must agree to well under a voxel; AMOS stores affines as float32.
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class AmosCase:
    """One labelled scan: its id, image and label files, and modality ('ct' or 'mr')."""

    case_id: str
    image: Path
    label: Path
    modality: str


def find_cases(root: str | Path) -> list[AmosCase]:
    """Every labelled case under an AMOS22 root, sorted by id (files are not opened here)."""
    root = Path(root)
    if not root.exists():
        raise AmosegError("AMOS folder not found", root, "pass the folder holding dataset.json")
    if not root.is_dir():
        raise AmosegError("AMOS root is not a folder", root, "pass the folder holding dataset.json")
    listing = root / "dataset.json"
    cases = _from_dataset_json(root, listing) if listing.exists() else _from_folders(root)
    if not cases:
        raise AmosegError(
            "no labelled cases found",
            root,
            "expected dataset.json or imagesTr/labelsTr with amos_XXXX.nii.gz files",
        )
    seen: dict[str, AmosCase] = {}
    for case in cases:
        if case.case_id in seen:
            raise AmosegError(
                f"case {case.case_id} is listed twice ({seen[case.case_id].image} and "
                f"{case.image})",
                listing if listing.exists() else root,
                "each scan may appear only once",
            )
        seen[case.case_id] = case
    return sorted(cases, key=lambda c: c.case_id)


def dataset_is_synthetic(root: str | Path) -> bool:
    """True when the root's dataset.json says amoseg synthesised it (`amoseg_synthetic`):
    prepare carries the flag into the store and train into the run, so a model trained on
    phantoms says so wherever it is used."""
    listing = Path(root) / "dataset.json"
    if not listing.exists():
        return False
    spec = read_json(listing, "dataset.json")
    return isinstance(spec, dict) and spec.get("amoseg_synthetic") is True


def _from_dataset_json(root: Path, listing: Path) -> list[AmosCase]:
    spec = read_json(listing, "dataset.json")
    if not isinstance(spec, dict) or not any(key in spec for key in LABELLED_LISTS):
        raise AmosegError(
            "dataset.json has no 'training' or 'validation' list",
            listing,
            "is this an AMOS22 dataset.json?",
        )
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
            image = root / entry["image"]
            case_id = case_id_of(image)
            cases.append(AmosCase(case_id, image, root / entry["label"], modality_of(case_id)))
    return cases


def _from_folders(root: Path) -> list[AmosCase]:
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
                cases.append(AmosCase(case_id, image, label, modality_of(case_id)))
    return cases


def check_case_files(case: AmosCase) -> None:
    """Cheap pre-flight from headers only: files exist, are NIfTI, and share one voxel grid.

    Catches most bad inputs before anything is written; truncation deep inside a file and
    bad voxel values only show when the voxels are read, in `prepare`.
    """
    headers = []
    for path, what in ((case.image, "image"), (case.label, "label")):
        if not path.exists():
            raise AmosegError(f"{what} file listed for {case.case_id} is missing", path)
        try:
            img = nib.load(str(path))
            shape = tuple(int(n) for n in img.header.get_data_shape())
            affine = np.asarray(img.affine, dtype=np.float64)
        except Exception:
            load_nifti(path, what)  # raises the precise one-line error for this file
            raise  # pragma: no cover - nibabel failed once but loads on retry
        headers.append((shape[:3] if shape[3:] in ((), (1,)) else shape, affine))
    check_same_grid(case, headers[0][0], headers[0][1], headers[1][0], headers[1][1])


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
