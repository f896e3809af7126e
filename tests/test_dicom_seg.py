"""DICOM-SEG output: read back with highdicom, every segment equals the NIfTI labels."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from amoseg.cli.main import main
from amoseg.data.dicom import load_dicom_series
from amoseg.errors import AmosegError
from amoseg.inference.dicom_seg import (
    ORGAN_CODES,
    organ_code,
    read_source_series,
    write_dicom_seg,
)


def seg_masks(seg_path: Path, source) -> dict[int, np.ndarray]:
    """AMOS id → (X, Y, Z) mask from a SEG, frames placed by their referenced source image."""
    seg = hd.seg.segread(str(seg_path))
    uids = [str(ds.SOPInstanceUID) for ds in source.datasets]
    stack = seg.get_pixels_by_source_instance(uids, combine_segments=False)  # (Z', R, C, S)
    numbers = seg.get_segment_numbers()
    masks = {}
    for i, number in enumerate(numbers):
        tracking = seg.get_segment_description(number).tracking_id
        amos_id = int(tracking.split()[-1])
        masks[amos_id] = stack[..., i].transpose(2, 1, 0)  # frames in source order → (X, Y, Z)
    return masks


def source_order_labels(labels: np.ndarray, source, affine: np.ndarray) -> np.ndarray:
    """The label volume with its slices in the source files' order (as the SEG frames are)."""
    from amoseg.inference.dicom_seg import slice_index_of

    return labels[:, :, slice_index_of(source.datasets, affine, labels.shape)]


@pytest.fixture(scope="module")
def real_series(realdata: Path):
    folder = realdata / "example_ct" / "dicom"
    image = load_dicom_series(folder)
    model_labels = nib.load(str(realdata / "example_ct" / "dicom_labels_amos_model.nii.gz"))
    ornt = ornt_transform(io_orientation(model_labels.affine), io_orientation(image.affine))
    labels = apply_orientation(np.asarray(model_labels.dataobj), ornt).astype(np.uint8)
    return folder, image, labels, read_source_series(folder)


def test_seg_of_real_series_holds_every_organ_voxel_for_voxel(real_series, tmp_path):
    _folder, image, labels, source = real_series
    path = write_dicom_seg(labels, image.affine, source, tmp_path / "ct_seg.dcm")
    masks = seg_masks(path, source)
    present = sorted(int(v) for v in np.unique(labels) if v)
    assert sorted(masks) == present and len(present) >= 5
    in_order = source_order_labels(labels, source, image.affine)
    for amos_id, mask in masks.items():
        np.testing.assert_array_equal(mask.astype(bool), in_order == amos_id, err_msg=str(amos_id))

    seg = hd.seg.segread(str(path))
    first = source.datasets[0]
    assert seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == first.StudyInstanceUID
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {str(ds.SOPInstanceUID) for ds in source.datasets}
    # every stored frame sits exactly where its source image does
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source.datasets}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        np.testing.assert_allclose(position, by_uid[uid].ImagePositionPatient, atol=1e-4)
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(
        shared.PlaneOrientationSequence[0].ImageOrientationPatient, first.ImageOrientationPatient
    )
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, first.PixelSpacing)
    assert (seg.Rows, seg.Columns) == (first.Rows, first.Columns)


def test_segments_carry_snomed_codes_and_laterality(real_series, tmp_path):
    _folder, image, labels, source = real_series
    seg = hd.seg.segread(str(write_dicom_seg(labels, image.affine, source, tmp_path / "s.dcm")))
    for item in seg.SegmentSequence:
        amos_id = int(item.TrackingID.split()[-1])
        code = item.SegmentedPropertyTypeCodeSequence[0]
        expected, side = organ_code(amos_id)
        assert (code.CodingSchemeDesignator, code.CodeValue) == ("SCT", expected.value)
        modifiers = getattr(code, "SegmentedPropertyTypeModifierCodeSequence", [])
        assert [m.CodeMeaning for m in modifiers] == ([side.meaning] if side else [])
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        assert item.SegmentAlgorithmType == "AUTOMATIC"
    assert organ_code(2)[0].value == "64033007" and organ_code(2)[1].meaning == "Right"
    assert (
        organ_code(15, "F")[0].meaning == "Uterus" and organ_code(15, "M")[0].meaning == "Prostate"
    )
    assert set(ORGAN_CODES) == set(range(1, 15))


def test_organs_cut_by_the_scans_edge_say_so_in_the_seg(real_series, tmp_path):
    """A 20-slice series cuts most organs: their segments carry the truncation note, the
    others none (the same rule as volumes.csv and the viewer)."""
    from amoseg.inference.dicom_seg import TRUNCATED_NOTE
    from amoseg.labels import truncated_organs

    _folder, image, labels, source = real_series
    labels = np.where(labels == 4, 0, labels).astype(labels.dtype)
    labels[200:210, 200:210, 8:12] = 4  # a gallbladder inside the scan: not cut
    cut = truncated_organs(labels)
    assert cut and 4 not in cut and 4 in labels
    seg = hd.seg.segread(str(write_dicom_seg(labels, image.affine, source, tmp_path / "t.dcm")))
    for item in seg.SegmentSequence:
        amos_id = int(item.TrackingID.split()[-1])
        note = getattr(item, "SegmentDescription", None)
        assert (note == TRUNCATED_NOTE) == (amos_id in cut), amos_id


def test_labels_off_the_series_grid_are_refused(real_series, tmp_path):
    _folder, image, labels, source = real_series
    shifted = image.affine.copy()
    shifted[2, 3] += 1.0  # one millimetre off along the slices
    with pytest.raises(AmosegError, match="grid is not the DICOM series"):
        write_dicom_seg(labels, shifted, source, tmp_path / "x.dcm")
    with pytest.raises(AmosegError, match="at least one segment"):
        write_dicom_seg(np.zeros_like(labels), image.affine, source, tmp_path / "y.dcm")
    assert not list(tmp_path.iterdir())


def test_predict_format_both_on_real_dicom(tiny_unet_run, realdata, tmp_path, capsys):
    folder = realdata / "example_ct" / "dicom"
    out = tmp_path / "out"
    main(["predict", str(tiny_unet_run), str(folder), "-o", str(out), "--format", "both"])
    nifti = nib.load(str(out / "dicom_seg.nii.gz"))
    labels = np.asarray(nifti.dataobj)
    source = read_source_series(folder)
    masks = seg_masks(out / "dicom_seg.dcm", source)
    assert sorted(masks) == sorted(int(v) for v in np.unique(labels) if v) and masks
    in_order = source_order_labels(labels, source, nifti.affine)
    for amos_id, mask in masks.items():
        np.testing.assert_array_equal(mask.astype(bool), in_order == amos_id)


@pytest.mark.slow
def test_predict_dicom_seg_only_writes_no_nifti(tiny_unet_run, realdata, tmp_path):
    out = tmp_path / "out"
    main(["predict", str(tiny_unet_run), str(realdata / "example_ct" / "dicom"), "-o", str(out),
          "--format", "dicom-seg"])  # fmt: skip
    assert (out / "dicom_seg.dcm").exists() and not (out / "dicom_seg.nii.gz").exists()
    assert (out / "dicom_volumes.csv").exists()


def test_nifti_input_with_dicom_seg_is_one_line(tiny_unet_run, realdata, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tiny_unet_run), str(realdata / "example_ct" / "ct.nii.gz"),
              "-o", str(out), "--format", "dicom-seg"])  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a DICOM series" in err
    assert not out.exists()


def test_unknown_format_is_one_line(tiny_unet_run, realdata, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(tiny_unet_run), str(realdata / "example_ct" / "ct.nii.gz"),
              "-o", str(tmp_path), "--format", "rtstruct"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "unknown --format" in capsys.readouterr().err


def _synthetic_series(folder: Path, positions) -> tuple:
    from tests.dicom_series import write_series

    volume = np.full((40, 36, len(positions)), -100, np.int16)
    volume[5:20, 6:30, 2:8] = 60
    write_series(folder, volume, positions)
    return volume


def test_synthetic_series_round_trips_and_a_tilted_one_is_refused(tmp_path):
    import warnings

    from tests.dicom_series import tilted_positions

    _synthetic_series(tmp_path / "straight", tilted_positions(10, 0.0))
    image = load_dicom_series(tmp_path / "straight")
    labels = np.zeros(image.shape, np.uint8)
    labels[5:20, 6:30, 2:8] = 6
    labels[25:30, 10:14, :] = 15  # AMOS "prostate/uterus": PatientSex is blank → prostate
    source = read_source_series(tmp_path / "straight")
    path = write_dicom_seg(labels, image.affine, source, tmp_path / "s.dcm")
    masks = seg_masks(path, source)
    in_order = source_order_labels(labels, source, image.affine)
    assert sorted(masks) == [6, 15]
    for amos_id, mask in masks.items():
        np.testing.assert_array_equal(mask.astype(bool), in_order == amos_id)
    meanings = [s.SegmentedPropertyTypeCodeSequence[0].CodeMeaning
                for s in hd.seg.segread(str(path)).SegmentSequence]  # fmt: skip
    assert meanings == ["Liver", "Prostate"]

    _synthetic_series(tmp_path / "tilted", tilted_positions(10, 15.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "gantry tilt ... resampled upright"
        upright = load_dicom_series(tmp_path / "tilted")
    with pytest.raises(AmosegError, match="tilted or resampled") as info:
        write_dicom_seg(np.asarray(labels), upright.affine, read_source_series(tmp_path / "tilted"),
                        tmp_path / "t.dcm")  # fmt: skip
    assert "\n" not in info.value.line() and not (tmp_path / "t.dcm").exists()


def test_seg_passes_dicom3tools_validator(real_series, tmp_path):
    """dciodvfy (Debian's dicom3tools) checks the SEG against the standard's IOD tables."""
    import shutil
    import subprocess

    validator = shutil.which("dciodvfy")
    if validator is None:
        pytest.skip("dciodvfy not installed (apt-get install dicom3tools)")
    _folder, image, labels, source = real_series
    path = write_dicom_seg(labels, image.affine, source, tmp_path / "v.dcm")
    report = subprocess.run([validator, str(path)], capture_output=True, text=True, timeout=120)
    lines = (report.stdout + report.stderr).splitlines()
    assert "Segmentation" in lines
    assert not [line for line in lines if line.startswith("Error")], lines
