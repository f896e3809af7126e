"""Write small uncompressed CT DICOM series with pydicom, with any slice positions (e.g. the
sheared positions of a gantry-tilted acquisition), for the DICOM reader's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROW_SPACING = 0.8  # mm between rows and between columns
SLICE_STEP = 2.0  # mm along the slice normal


def tilted_positions(n_slices: int, tilt_deg: float, origin=(-20.0, -30.0, 100.0)) -> np.ndarray:
    """LPS positions of axial slices (normal +z) whose origins also move along +y by
    tan(tilt) per mm of table feed: what a scanner writes for a gantry tilted about x."""
    k = np.arange(n_slices, dtype=float)[:, None]
    step = np.array([0.0, SLICE_STEP * np.tan(np.radians(tilt_deg)), SLICE_STEP])
    return np.asarray(origin, dtype=float) + k * step


def write_series(
    folder: Path,
    volume: np.ndarray,
    positions: np.ndarray,
    orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    spacing: float = ROW_SPACING,
) -> list[Path]:
    """One file per slice of `volume` (X = columns, Y = rows, Z = slices; int16 HU)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    files = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality, ds.PatientID, ds.PatientName = "CT", "phantom", "phantom"
        ds.InstanceNumber, ds.SeriesNumber = k + 1, 1
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.PixelSpacing = [spacing, spacing]
        ds.SliceThickness = SLICE_STEP
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.ascontiguousarray(volume[:, :, k].T.astype("<i2")).tobytes()
        path = folder / f"slice_{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def edit_series(files: list[Path], **changes: object) -> None:
    """Set (or, with None, delete) DICOM attributes in every file of a series."""
    import pydicom

    for path in files:
        ds = pydicom.dcmread(path)
        for key, value in changes.items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.save_as(path)
