"""Organ volumes a clinician can trust: organs cut by the scan's edge are flagged, and MR
intensities are never called HU (issue 27)."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest

from amoseg.inference import ScanInput, backend_for_model, predict_scan
from amoseg.inference.volumes import organ_volumes, truncated_organs, write_volumes
from tests.predict_models import BRIGHT_CLASS, BRIGHT_HU, ThresholdModel

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def slab() -> np.ndarray:
    """A 20-slice slab: liver cut by the first slice, spleen whole inside, kidney cut in-plane."""
    labels = np.zeros((32, 32, 20), np.uint8)
    labels[8:20, 8:20, 0:6] = 6  # liver: runs out of the slab's first slice
    labels[22:26, 22:26, 8:12] = 1  # spleen: whole
    labels[0:4, 10:14, 8:12] = 2  # right kidney: on the in-plane border (x = 0)
    labels[12:14, 28:32, 14:16] = 3  # left kidney: on the last row (y = 31)
    return labels


def test_truncated_organs_are_those_on_a_face_of_the_scan():
    assert truncated_organs(slab()) == {6, 2, 3}
    assert truncated_organs(np.zeros((4, 4, 4), np.uint8)) == set()
    whole = np.zeros((8, 8, 8), np.uint8)
    whole[2:6, 2:6, 2:6] = 7
    assert truncated_organs(whole) == set()


def test_volumes_flag_truncated_organs_and_keep_their_figures(tmp_path):
    labels = slab()
    rows = organ_volumes(labels, np.full(labels.shape, 40.0), AFFINE)
    by_name = {r["organ"]: r for r in rows}
    assert by_name["liver"]["truncated"] is True
    assert by_name["liver"]["volume_ml"] == pytest.approx(12 * 12 * 6 * 2 / 1000)
    assert by_name["spleen"]["truncated"] is False
    assert by_name["stomach"]["truncated"] is False and by_name["stomach"]["voxels"] == 0
    write_volumes(rows, tmp_path / "v.csv", tmp_path / "v.json", {})
    table = {r["organ"]: r for r in csv.DictReader((tmp_path / "v.csv").open())}
    assert table["liver"]["truncated"] == "true" and table["spleen"]["truncated"] == "false"
    assert table["liver"]["mean_hu"] == table["liver"]["mean_intensity"] == "40.0"
    saved = json.loads((tmp_path / "v.json").read_text())["organs"]
    assert saved[5]["truncated"] is True and saved[0]["truncated"] is False


def test_mr_intensities_are_not_called_hu(tmp_path):
    labels = slab()
    image = np.full(labels.shape, 812.0)
    mr = organ_volumes(labels, image, AFFINE, modality="mr")
    assert all("mean_hu" not in r for r in mr)
    assert mr[0]["mean_intensity"] == 812.0
    ct = organ_volumes(labels, image, AFFINE, modality="ct")
    assert ct[0]["mean_hu"] == ct[0]["mean_intensity"] == 812.0
    write_volumes(mr, tmp_path / "mr.csv", tmp_path / "mr.json", {})
    table = list(csv.DictReader((tmp_path / "mr.csv").open()))
    assert table[0]["mean_hu"] == "" and table[0]["mean_intensity"] == "812.0"


def test_predict_flags_an_organ_cut_by_the_slab(tmp_path):
    """End to end: a bright 'liver' reaching the scan's first slice comes out flagged."""
    image = np.full((32, 32, 10), -100.0, np.float32)
    image[8:20, 8:20, 0:4] = BRIGHT_HU + 100
    path = tmp_path / "slab.nii.gz"
    nib.save(nib.Nifti1Image(image, AFFINE), str(path))
    backend = backend_for_model(ThresholdModel(32), device="cpu")
    result = predict_scan(backend, ScanInput(path, "nifti", "slab"), tmp_path / "out")
    organs = json.loads(result.volumes_json.read_text())["organs"]
    assert organs[BRIGHT_CLASS - 1]["voxels"] > 0
    assert organs[BRIGHT_CLASS - 1]["truncated"] is True
    rows = list(csv.DictReader(result.volumes_csv.open()))
    assert rows[BRIGHT_CLASS - 1]["truncated"] == "true"


def test_predict_on_an_mr_scan_writes_no_mean_hu(tmp_path):
    """MR intensities (non-negative, no air at -1000) get mean_intensity only."""
    image = np.full((32, 32, 10), 50.0, np.float32)  # below the model's threshold
    image[8:20, 8:20, 3:7] = BRIGHT_HU + 100
    path = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(image, AFFINE), str(path))
    backend = backend_for_model(ThresholdModel(32), device="cpu")
    result = predict_scan(backend, ScanInput(path, "nifti", "t1"), tmp_path / "out")
    organs = json.loads(result.volumes_json.read_text())["organs"]
    assert all("mean_hu" not in o for o in organs)
    assert organs[BRIGHT_CLASS - 1]["mean_intensity"] == pytest.approx(BRIGHT_HU + 100)
    rows = list(csv.DictReader(result.volumes_csv.open()))
    assert rows[BRIGHT_CLASS - 1]["mean_hu"] == ""
