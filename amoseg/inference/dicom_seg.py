"""DICOM Segmentation (SEG) output for a DICOM input series, written with highdicom.

A SEG is what PACS viewers, 3D Slicer and OHIF load next to the CT: one segment per organ
found, each coded in SNOMED CT, every frame referencing the source image it segments (so it
carries the series' own UIDs and geometry). The labels must be on the series' own grid —
`amoseg predict` keeps it — which is checked against the source headers before writing.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import atomic_path
from amoseg.data.dicom import MAX_UNTILTED_SHIFT_VOXELS, dicom_series_files
from amoseg.data.dicom_find import dicom_folder
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_COLORS, CLASS_NAMES, truncated_organs

#: SNOMED CT concept per AMOS organ id, by its keyword in DICOM's code dictionary (pydicom's
#: `codes.SCT`, the concepts of DICOM CID 7166/7140), with laterality as a property-type
#: modifier as dcmqi and 3D Slicer's terminology code paired organs. AMOS class 15 is
#: "prostate/uterus": coded from the series' PatientSex (prostate when unknown).
ORGAN_CODES: dict[int, tuple[str, str | None]] = {
    1: ("Spleen", None),
    2: ("Kidney", "Right"),
    3: ("Kidney", "Left"),
    4: ("Gallbladder", None),
    5: ("Esophagus", None),
    6: ("Liver", None),
    7: ("Stomach", None),
    8: ("Aorta", None),
    9: ("InferiorVenaCava", None),
    10: ("Pancreas", None),
    11: ("AdrenalGland", "Right"),
    12: ("AdrenalGland", "Left"),
    13: ("Duodenum", None),
    14: ("Bladder", None),
}
#: patient and study attributes the SEG copies from its source (DICOM type 2: they may be
#: empty but must be present; exporters and test phantoms often leave them out).
TYPE2_PATIENT_STUDY = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)  # fmt: skip
#: slice positions may differ from the volume's grid by float noise only.
POSITION_TOLERANCE_MM = 1e-2


@dataclass
class SourceSeries:
    """The input series' headers (no pixel data) in the order the SEG frames follow."""

    folder: Path  # the input: a folder or a .zip
    datasets: list[Any]


def read_source_series(path: str | Path, series_uid: str | None = None) -> SourceSeries:
    """Headers of the series `load_dicom_series(path, series_uid)` reads (a folder, nested
    folders or a `.zip`), in the same order."""
    import pydicom

    path = Path(path)
    datasets = []
    with dicom_folder(path) as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # which series was chosen: load_dicom_series says so
        for name in dicom_series_files(folder, series_uid):
            try:
                datasets.append(pydicom.dcmread(name, stop_before_pixels=True))
            except Exception as exc:  # pydicom raises several types for damaged headers
                raise AmosegError(f"DICOM header cannot be read ({exc})", name) from exc
    _complete_identifiers(datasets, path)
    return SourceSeries(path, datasets)


def seg_problem(path: Path, series_uid: str | None = None) -> str | None:
    """Why this DICOM input cannot get a DICOM-SEG (None if it can), found from its headers
    before any model runs: a SEG frame must sit on a source image, which a series without
    PixelSpacing or a gantry-tilted series (resampled upright for the NIfTI) does not
    allow. Asked several times per input (output checks, then the scan), so the answer
    is kept while the input's modification time stays the same."""
    try:
        stamp = Path(path).stat().st_mtime_ns
    except OSError:
        stamp = 0
    return _seg_problem(Path(path), series_uid, stamp)


@functools.lru_cache(maxsize=64)
def _seg_problem(path: Path, series_uid: str | None, _stamp: int) -> str | None:
    try:
        source = read_source_series(path, series_uid)
    except AmosegError as exc:
        return exc.what
    for ds in source.datasets:
        if "PixelSpacing" not in ds:
            return "the series has no PixelSpacing"
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            return "the series has no slice positions or orientation"
    iop = np.asarray(source.datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    positions = np.array([np.asarray(ds.ImagePositionPatient, float) for ds in source.datasets])
    steps = np.diff(positions[np.argsort(positions @ normal)], axis=0)
    sideways = np.linalg.norm(np.median(steps - np.outer(steps @ normal, normal), axis=0))
    pixel = min(float(v) for v in source.datasets[0].PixelSpacing)
    if sideways * len(steps) / pixel >= MAX_UNTILTED_SHIFT_VOXELS:  # as load_dicom_series
        return "the series is gantry-tilted (its NIfTI is resampled upright)"
    return None


def _complete_identifiers(datasets: list[Any], folder: Path) -> None:
    """Complete the headers in memory (the files are not touched). Anonymisers sometimes
    blank the UIDs a SEG must reference. The file meta header
    repeats each image's SOP class and instance UID, so those are restored from it; a
    blank study or series UID is replaced by one derived from the instance UIDs (the same
    for every run), which a PACS cannot match to the original study."""
    from pydicom.uid import generate_uid

    for ds in datasets:
        meta = getattr(ds, "file_meta", None)
        for key, meta_key in (
            ("SOPClassUID", "MediaStorageSOPClassUID"),
            ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
        ):
            if not str(getattr(ds, key, "") or "") and meta is not None:
                setattr(ds, key, str(getattr(meta, meta_key, "") or ""))
            if not str(getattr(ds, key, "") or ""):
                raise AmosegError(
                    f"DICOM image has no {key}", ds.filename, "it cannot be referenced"
                )
        for key in TYPE2_PATIENT_STUDY:  # may be empty in DICOM, but must be present
            if key not in ds:
                setattr(ds, key, "")
    instances = sorted(str(ds.SOPInstanceUID) for ds in datasets)
    for key in ("StudyInstanceUID", "SeriesInstanceUID"):
        values = {str(getattr(ds, key, "") or "") for ds in datasets}
        if values == {""}:
            derived = generate_uid(entropy_srcs=[key, *instances])
            for ds in datasets:
                setattr(ds, key, derived)
        elif len(values) > 1:
            raise AmosegError(
                f"DICOM images disagree on {key}", folder, "keep one series per folder"
            )


def organ_code(label: int, patient_sex: str = "") -> tuple[Any, Any | None]:
    """(SNOMED CT property type, laterality modifier or None) of an AMOS organ id."""
    from pydicom.sr.codedict import codes

    if label == 15:
        return (codes.SCT.Uterus if patient_sex.upper() == "F" else codes.SCT.Prostate), None
    keyword, side = ORGAN_CODES[label]
    return getattr(codes.SCT, keyword), (getattr(codes.SCT, side) if side else None)


def slice_index_of(datasets: list[Any], affine: np.ndarray, shape: tuple[int, ...]) -> list[int]:
    """For each source image, its slice k in the (X, Y, Z) label volume — after checking that
    the image's position, orientation, spacing and size are exactly that slice's."""
    from amoseg.data.dicom import LPS_TO_RAS

    inverse = np.linalg.inv(affine)
    nx, ny, nz = shape
    out = []
    for ds in datasets:
        iop = np.asarray(ds.ImageOrientationPatient, dtype=float)
        dy, dx = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
        ipp = np.asarray(ds.ImagePositionPatient, dtype=float)
        ras = LPS_TO_RAS[:3, :3]
        column_step = ras @ (iop[:3] * dx)  # next column = next x index
        row_step = ras @ (iop[3:] * dy)  # next row = next y index
        ijk = inverse[:3, :3] @ (ras @ ipp) + inverse[:3, 3]
        k = round(float(ijk[2]))
        grid_ok = (
            (int(ds.Rows), int(ds.Columns)) == (ny, nx)
            and np.allclose(column_step, affine[:3, 0], atol=1e-4)
            and np.allclose(row_step, affine[:3, 1], atol=1e-4)
            and np.allclose(ijk[:2], 0.0, atol=1e-3)
            and 0 <= k < nz
            and np.allclose(
                affine[:3, 2] * k + affine[:3, 3], ras @ ipp, atol=POSITION_TOLERANCE_MM
            )
        )
        if not grid_ok:
            raise AmosegError(
                "the segmentation's grid is not the DICOM series' own grid "
                "(a tilted or resampled series?)",
                getattr(ds, "filename", None),
                "use --format nifti for this series",
            )
        out.append(k)
    if len(set(out)) != len(out):
        raise AmosegError("two DICOM images lie on the same slice", datasets[0].filename)
    return out


#: SegmentDescription (0062,0006) of an organ the scan's edge cuts
TRUNCATED_NOTE = "truncated: cut by the scan's edge, its volume is only the part inside"


def segment_descriptions(
    present: list[int], patient_sex: str = "", truncated: set[int] | frozenset[int] = frozenset()
) -> list[Any]:
    """One highdicom SegmentDescription per organ found, numbered 1..n in AMOS id order;
    organs in `truncated` say so in their SegmentDescription."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from amoseg._version import __version__

    algorithm = hd.AlgorithmIdentificationSequence(
        name="amoseg", version=__version__, family=codes.DCM.ArtificialIntelligence
    )
    out = []
    for number, label in enumerate(present, start=1):
        property_type, laterality = organ_code(label, patient_sex)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=CLASS_NAMES[label],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"AMOS label {label}",
            display_color=hd.color.CIELabColor.from_rgb(*CLASS_COLORS[label]),
        )
        if label in truncated:
            description.SegmentDescription = TRUNCATED_NOTE
        if laterality is not None:
            modifier = hd.sr.CodedConcept.from_code(laterality)
            description.SegmentedPropertyTypeCodeSequence[
                0
            ].SegmentedPropertyTypeModifierCodeSequence = [modifier]
        out.append(description)
    return out


def write_dicom_seg(
    labels: np.ndarray,
    affine: np.ndarray,
    source: SourceSeries,
    target: str | Path,
    *,
    model_name: str = "amoseg",
) -> Path:
    """Write `labels` ((X, Y, Z) AMOS ids on the series' grid) as a binary DICOM SEG."""
    import highdicom as hd

    target = Path(target)
    present = [int(v) for v in np.unique(labels) if 0 < v < len(CLASS_NAMES)]
    if not present:
        raise AmosegError(
            "no organ was found, and a DICOM-SEG needs at least one segment",
            source.folder,
            "the NIfTI label map (--format nifti) records an empty result",
        )
    order = slice_index_of(source.datasets, affine, labels.shape)
    lut = np.zeros(256, dtype=np.uint8)
    lut[present] = np.arange(1, len(present) + 1)
    # frame for each source image: rows = y, columns = x of that slice
    frames = np.stack([lut[labels[:, :, k].T] for k in order])
    with warnings.catch_warnings():
        # a one-word PatientName (common in exports) is valid DICOM; highdicom warns anyway
        warnings.filterwarnings("ignore", message=".*intended person name.*")
        seg = _segmentation(hd, source, frames, present, model_name, truncated_organs(labels))
    with atomic_path(target, suffix=".dcm") as tmp:
        seg.save_as(str(tmp))
    return target


def _segmentation(
    hd: Any,
    source: SourceSeries,
    frames: np.ndarray,
    present: list[int],
    model_name: str,
    truncated: set[int],
) -> Any:
    """The highdicom Segmentation: frames in source order, segments numbered 1..n."""
    from amoseg._version import __version__

    first = source.datasets[0]
    sex = str(getattr(first, "PatientSex", "") or "")
    return hd.seg.Segmentation(
        source_images=source.datasets,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(present, sex, truncated),
        series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="amoseg",
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        device_serial_number="0",
        series_description="amoseg organs",
        content_label="AMOSEG",
        content_description="abdominal organs (AMOS22 classes), automatic",
    )
