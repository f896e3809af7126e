"""NIfTI values as in the files: image precision, label ids mapped by a dataset's label set,
and one spacing source (the affine) with a note where pixdim disagrees."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from amoseg.data.nifti import (
    image_voxels,
    label_array,
    load_nifti,
    pixdim_note,
    voxel_spacing,
)
from amoseg.errors import AmosegError
from amoseg.inference.inputs import ScanInput, load_scan
from amoseg.labels import AMOS_DATASET_LABELS
from amoseg.store.prepare import prepare_dataset
from tests import badfiles


def _save(path, data, affine=None):
    img = nib.Nifti1Image(data, badfiles.affine() if affine is None else affine)
    nib.save(img, str(path))
    return path


def test_float_images_keep_their_values(tmp_path):
    """An MR scaled to [0, 1]: every reader hands on the file's values, none rounded."""
    rng = np.random.default_rng(0)
    values = rng.random((8, 7, 5)).astype(np.float32)
    path = _save(tmp_path / "mr.nii.gz", values)
    got = image_voxels(load_nifti(path), path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, values)
    scan = load_scan(ScanInput(path, "nifti", "mr"))
    np.testing.assert_array_equal(scan.data, values)


def test_integer_images_keep_their_dtype_and_scaled_ones_their_scale(tmp_path):
    ct = badfiles.good_image()
    path = _save(tmp_path / "ct.nii.gz", ct)
    got = image_voxels(load_nifti(path), path)
    assert got.dtype == np.int16
    np.testing.assert_array_equal(got, ct)
    scaled = nib.Nifti1Image((np.arange(60) * 0.001).reshape(3, 4, 5), badfiles.affine())
    scaled.set_data_dtype(np.int16)  # nibabel stores int16 with a scl_slope
    path = tmp_path / "scaled.nii.gz"
    nib.save(scaled, str(path))
    assert nib.load(str(path)).dataobj.slope != 1
    got = image_voxels(load_nifti(path), path)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.ravel(), np.arange(60) * 0.001, atol=1e-5)


def test_nan_images_are_refused(tmp_path):
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 1, 1] = np.nan
    path = _save(tmp_path / "nan.nii.gz", data)
    with pytest.raises(AmosegError, match="NaN/Inf"):
        image_voxels(load_nifti(path), path)


def test_spacing_is_the_affines_even_for_oblique_grids():
    rotation = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.7, 0.9, 2.5])
    img = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), affine)
    assert voxel_spacing(img) == pytest.approx((0.7, 0.9, 2.5))
    assert pixdim_note(img, "x.nii.gz") is None


def test_label_ids_mapped_by_a_lut(tmp_path):
    path = _save(tmp_path / "lab.nii.gz", np.array([0, 1, 2, 2], np.uint16).reshape(2, 2, 1))
    img = load_nifti(path, "label")
    np.testing.assert_array_equal(label_array(img, path, (0, 6, 1)).ravel(), [0, 6, 1, 1])
    with pytest.raises(AmosegError, match=r"label ids 2 are not in dataset.json's labels"):
        label_array(img, path, (0, 6))
    with pytest.raises(AmosegError, match=r"label ids 2 .*declared: 0, 1, 3"):
        label_array(img, path, (0, 6, -1, 1))


def test_prepare_records_the_affines_spacing_and_warns_about_pixdim(tmp_path):
    root = tmp_path / "root"
    for n, case_id in enumerate(("amos_0001", "amos_0002")):
        image, _ = badfiles.good_pair(root, case_id, seed=n)
    img = nib.load(str(image))
    img.header["pixdim"][3] = 1.0  # the sform keeps 3 mm slices
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header), str(image))
    spec = {
        "labels": dict(AMOS_DATASET_LABELS),
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
            for c in ("amos_0001", "amos_0002")
        ],
    }
    (root / "dataset.json").write_text(json.dumps(spec))
    summary = prepare_dataset(root, tmp_path / "store", size=16, progress=False)
    meta = json.loads((tmp_path / "store" / "cases" / "amos_0002" / "meta.json").read_text())
    assert meta["spacing"] == pytest.approx([1.5, 1.5, 3.0])  # main: pixdim's 1.0
    notes = [n for n in summary["warnings"] if "pixdim" in n]
    assert notes == [
        "amos_0002: amos_0002.nii.gz: pixdim (1.5, 1.5, 1) mm disagrees with the affine's "
        "voxel sizes (1.5, 1.5, 3) mm; using the affine"
    ]


def test_corrupt_qform_quaternion_is_one_line(tmp_path):
    """Found by tests/test_reader_fuzz.py: quaternion b, c, d with b² + c² + d² > 1 made
    nibabel raise ValueError outside load_nifti's guarded read."""
    img = nib.Nifti1Image(badfiles.good_image(), badfiles.affine())
    img.set_qform(badfiles.affine(), code=1)
    img.header["quatern_b"], img.header["quatern_c"] = 0.00195312, 1.0
    path = tmp_path / "bad_qform.nii"
    nib.save(img, str(path))
    with pytest.raises(AmosegError, match="cannot be read") as info:
        load_nifti(path)
    assert "\n" not in info.value.line() and info.value.path == path
