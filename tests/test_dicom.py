"""DICOM series → NIfTI in RAS world: shape, spacing, affine, and refusal of mixed series."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import io_orientation, ornt_transform

from amoseg.data.dicom import load_dicom_series, lps_to_ras_affine
from amoseg.errors import AmosegError


@pytest.fixture(scope="module")
def series(realdata) -> nib.Nifti1Image:
    return load_dicom_series(realdata / "example_ct" / "dicom")


def test_series_shape_spacing_and_ras_affine(series):
    assert series.shape == (512, 512, 20)
    np.testing.assert_allclose(series.header.get_zooms(), (0.9765625, 0.9765625, 2.0))
    # LPS origin (-249.51, -437.51, -804.5) with identity direction → RAS: x and y negated
    expected = np.array(
        [[-0.9765625, 0, 0, 249.51171875], [0, -0.9765625, 0, 437.51171875],
         [0, 0, 2.0, -804.5], [0, 0, 0, 1]]
    )  # fmt: skip
    np.testing.assert_allclose(series.affine, expected, atol=1e-5)
    for code in ("qform_code", "sform_code"):
        assert series.header[code] == 1
    np.testing.assert_allclose(series.get_qform(), expected, atol=1e-4)
    data = np.asarray(series.dataobj)
    assert data.min() <= -1000 and 500 < data.max() < 4000  # HU after rescale


def test_series_matches_its_reference_label_geometry(series, realdata):
    """The model labels shipped with the series (another tool's LAS layout) land on tissue
    of the right density once put into our voxel order: same world grid, same anatomy."""
    ref = nib.load(str(realdata / "example_ct" / "dicom_labels_amos_model.nii.gz"))
    moved = ref.as_reoriented(ornt_transform(io_orientation(ref.affine),
                                             io_orientation(series.affine)))  # fmt: skip
    assert moved.shape == series.shape
    np.testing.assert_allclose(moved.affine, series.affine, atol=1e-3)
    labels = np.asarray(moved.dataobj)
    hu = np.asarray(series.dataobj, dtype=np.float32)
    liver, aorta = hu[labels == 6].mean(), hu[labels == 8].mean()
    assert 40 < liver < 150 and aorta > 120 and hu[labels == 0].mean() < -300
    # a y flip (the classic LPS/RAS row mistake) would put the labels on other tissue
    assert hu[np.flip(labels, 1) == 8].mean() < aorta - 100


def test_lps_to_ras_affine_with_oblique_direction():
    # sagittal-ish: columns of the ITK direction are the voxel axes in LPS
    direction = (0, 0, 1, 1, 0, 0, 0, -1, 0)
    affine = lps_to_ras_affine(direction, (0.5, 0.7, 3.0), (10.0, 20.0, 30.0))
    voxel = np.array([2, 3, 4, 1.0])
    lps = np.array(direction, float).reshape(3, 3) @ (voxel[:3] * [0.5, 0.7, 3.0]) + [10, 20, 30]
    np.testing.assert_allclose(affine @ voxel, [-lps[0], -lps[1], lps[2], 1])


def _copy(realdata: Path, dest: Path, names: slice) -> list[Path]:
    dest.mkdir()
    files = sorted((realdata / "example_ct" / "dicom").iterdir())[names]
    return [Path(shutil.copy(f, dest / f.name)) for f in files]


def test_mixed_series_folder_is_refused(realdata, tmp_path):
    import pydicom

    for i, path in enumerate(_copy(realdata, tmp_path / "mixed", slice(0, 6))):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.{10 + (i >= 3)}"
        ds.save_as(path)
    with pytest.raises(AmosegError, match="mixes 2 DICOM series") as exc:
        load_dicom_series(tmp_path / "mixed")
    assert exc.value.path == tmp_path / "mixed"


def test_missing_slice_is_refused(realdata, tmp_path):
    files = _copy(realdata, tmp_path / "gap", slice(0, 8))
    files[4].unlink()
    with pytest.raises(AmosegError, match="unevenly spaced"):
        load_dicom_series(tmp_path / "gap")


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(AmosegError, match="no DICOM series"):
        load_dicom_series(tmp_path)
    (tmp_path / "b.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)
    with pytest.raises(AmosegError):
        load_dicom_series(tmp_path)


# --- gantry tilt: slices whose origins step along the table, not along the slice normal ---


def test_gantry_tilted_series_is_resampled_upright(tmp_path):
    """A bright line through every slice at one pixel: in a 15° tilted series it runs
    obliquely through the patient. Upright, each slice keeps its true position and the
    slice spacing is the 2 mm along the normal (main: 2/cos 15° = 2.07 mm, +3.5 % volume,
    the line vertical in world space)."""
    from tests.dicom_series import ROW_SPACING, SLICE_STEP, tilted_positions, write_series

    n = 10
    volume = np.full((40, 36, n), -1000, np.int16)
    volume[20, 18, :] = 1000
    positions = tilted_positions(n, 15.0)
    write_series(tmp_path / "tilt", volume, positions)
    with pytest.warns(UserWarning, match=r"gantry tilt 15\.0 deg resampled upright"):
        img = load_dicom_series(tmp_path / "tilt")
    np.testing.assert_allclose(img.header.get_zooms(), (ROW_SPACING, ROW_SPACING, SLICE_STEP))
    assert abs(np.linalg.det(img.affine[:3, :3])) == pytest.approx(ROW_SPACING**2 * SLICE_STEP)
    data = np.asarray(img.dataobj, dtype=float)
    for k in range(n):
        column = data[20, :, k] + 1000
        j = column @ np.arange(column.size) / column.sum()  # sub-voxel centre of the line
        world = img.affine @ [20, j, k, 1]
        lps = positions[k] + [20 * ROW_SPACING, 18 * ROW_SPACING, 0]  # where the scanner put it
        np.testing.assert_allclose(world[:3], [-lps[0], -lps[1], lps[2]], atol=0.05)


def test_real_series_with_tilted_positions_keeps_its_true_voxel_volume(realdata, tmp_path):
    import pydicom

    files = _copy(realdata, tmp_path / "tilt", slice(0, 6))
    for path in files:
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + (-766.5 - z) * np.tan(np.radians(12)), z]
        ds.save_as(path)
    with pytest.warns(UserWarning, match="gantry tilt 12.0 deg"):
        img = load_dicom_series(tmp_path / "tilt")
    np.testing.assert_allclose(img.header.get_zooms(), (0.9765625, 0.9765625, 2.0), rtol=1e-6)


def test_untilted_series_is_not_resampled(realdata):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img = load_dicom_series(realdata / "example_ct" / "dicom")
    assert b"tilt" not in img.header["descrip"].tobytes()


def test_inconsistent_shear_is_refused(tmp_path):
    from tests.dicom_series import tilted_positions, write_series

    positions = tilted_positions(6, 10.0)
    positions[3, 1] += 3.0  # one slice moved sideways: not one tilt
    write_series(tmp_path / "odd", np.zeros((8, 8, 6), np.int16), positions)
    with pytest.raises(AmosegError, match="shift sideways unevenly"):
        load_dicom_series(tmp_path / "odd")
