"""`amoseg predict`: geometry-exact label maps, organ volumes, clean-up, overlay, bad inputs."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.inference import (
    ScanInput,
    backend_for_model,
    largest_component_per_organ,
    organ_volumes,
    predict_scan,
    segment_scan,
)
from amoseg.inference.backends import ModelBackend, TorchBackend
from amoseg.inference.pipeline import resize_slices
from amoseg.preprocessing.geometry import volume_to_slices
from tests.predict_models import BRIGHT_CLASS, BRIGHT_HU, NoNetworkModel, ThresholdModel

GEOMETRY_KEYS = (
    "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d",
    "qoffset_x", "qoffset_y", "qoffset_z", "srow_x", "srow_y", "srow_z", "xyzt_units",
)  # fmt: skip


def assert_same_geometry(out_path: Path, reference: nib.Nifti1Image) -> np.ndarray:
    out = nib.load(str(out_path))
    assert out.shape == reference.shape[:3]
    assert out.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(out.affine, reference.affine)
    for key in GEOMETRY_KEYS:
        np.testing.assert_array_equal(out.header[key], reference.header[key], err_msg=key)
    np.testing.assert_array_equal(out.header["pixdim"][:4], reference.header["pixdim"][:4])
    labels = np.asarray(out.dataobj)
    assert labels.min() >= 0 and labels.max() <= 15
    return labels


def _ct_like(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-120, 60, size=shape).astype(np.float32)


def test_prediction_is_voxel_exact_for_permuted_axes():
    # file axes: 0 = superior, 1 = patient left, 2 = anterior (a far-from-RAS layout)
    affine = np.array([[0, -1.0, 0, 20], [0, 0, 1.0, -5], [3.0, 0, 0, 7], [0, 0, 0, 1]])
    data = _ct_like((12, 40, 40))
    data[3:7, 5:15, 20:33] = 400.0  # an off-centre bright block
    data[9, 30:38, 2:6] = 200.0
    backend = backend_for_model(ThresholdModel(40), device="cpu")
    labels = segment_scan(backend, data, affine, batch_size=5)
    assert labels.shape == data.shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.where(data > BRIGHT_HU, BRIGHT_CLASS, 0))


def test_prediction_lands_on_the_thresholded_voxels_after_resizing():
    # LAS, anisotropic, non-square: both resize steps and a flip are exercised
    affine = np.diag([-0.8, 1.1, 4.0, 1.0])
    data = _ct_like((50, 36, 9), seed=1)
    data[8:20, 20:31, 2:6] = 400.0
    expected = data > BRIGHT_HU
    backend = backend_for_model(ThresholdModel(32), device="cpu")
    got = segment_scan(backend, data, affine) == BRIGHT_CLASS
    assert ndimage.binary_erosion(expected)[got == 0].sum() == 0  # block interior found
    assert got[~ndimage.binary_dilation(expected, iterations=2)].sum() == 0  # nothing far off
    assert (got == expected).mean() > 0.98


def test_model_without_network_uses_its_own_probabilities():
    affine = np.diag([-1.0, -1.0, 2.0, 1.0])
    data = _ct_like((24, 24, 5))
    data[4:10, 12:20, 1:4] = 300.0
    backend = backend_for_model(NoNetworkModel(24), device="cpu")
    assert isinstance(backend, ModelBackend)
    assert isinstance(backend_for_model(ThresholdModel(24), device="cpu"), TorchBackend)
    labels = segment_scan(backend, data, affine)
    np.testing.assert_array_equal(labels, np.where(data > BRIGHT_HU, BRIGHT_CLASS, 0))


@pytest.mark.parametrize("codes", ["RAS", "LAS", "LPS", "PIR", "SLA", "ILP"])
def test_device_reorientation_matches_geometry(codes):
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff

    from amoseg.inference.pipeline import from_canonical_tensor, to_canonical_tensor
    from amoseg.preprocessing.geometry import from_canonical, to_canonical

    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    affine = inv_ornt_aff(axcodes2ornt(codes), data.shape)
    canon = to_canonical_tensor(torch.from_numpy(data), affine)
    np.testing.assert_array_equal(canon.numpy(), to_canonical(data, affine))
    back = from_canonical_tensor(canon, affine).numpy()
    np.testing.assert_array_equal(back, from_canonical(to_canonical(data, affine), affine))
    np.testing.assert_array_equal(back, data)


def test_slices_are_resized_exactly_as_prepare_stores_them():
    """Integer scans are rounded as the int16 store rounds them; float scans (an MR scaled
    to [0, 1]) stay float32 in the store and so here."""
    volume = (_ct_like((37, 29, 4)) * 7.3).astype(np.int16)
    expected = np.round(volume_to_slices(volume, 24, is_label=False))
    got = resize_slices(torch.from_numpy(volume), 24).numpy()
    np.testing.assert_allclose(got, expected, atol=1.0)  # float rounding at .5 boundaries
    assert (got == expected).mean() > 0.999
    floats = _ct_like((37, 29, 4)) / 120.0
    got = resize_slices(torch.from_numpy(floats), 24).numpy()
    np.testing.assert_allclose(got, volume_to_slices(floats, 24, is_label=False), atol=1e-5)
    assert not np.array_equal(got, np.round(got))


@pytest.mark.parametrize(
    "relpath",
    ["example_ct/ct.nii.gz", "amos_mini/imagesTr/amos_0001.nii.gz",
     "amos_mini/imagesVa/amos_0013.nii.gz"],
)  # fmt: skip
def test_real_scans_keep_their_exact_geometry(realdata, tmp_path, relpath):
    path = realdata / relpath
    backend = backend_for_model(ThresholdModel(128), device="cpu")
    item = ScanInput(path, "nifti", path.name.split(".")[0])
    result = predict_scan(backend, item, tmp_path, postprocess="lcc")
    reference = nib.load(str(path))
    labels = assert_same_geometry(result.seg_path, reference)
    assert result.seg_path.name.endswith("_seg.nii.gz")
    # the bright (bone/contrast) voxels of the input are where the model put them
    bright = np.asarray(reference.dataobj) > BRIGHT_HU
    found = labels == BRIGHT_CLASS
    assert found.sum() > 0
    assert (found & bright).sum() / found.sum() > 0.7
    assert set(np.unique(labels)) <= {0, BRIGHT_CLASS}
    rows = list(csv.DictReader(result.volumes_csv.open()))
    assert [int(r["label"]) for r in rows] == list(range(1, 16))
    voxel_ml = abs(np.linalg.det(reference.affine[:3, :3])) / 1000
    liver = rows[BRIGHT_CLASS - 1]
    assert int(liver["voxels"]) == found.sum()
    assert float(liver["volume_ml"]) == pytest.approx(found.sum() * voxel_ml, abs=1e-3)
    assert float(liver["mean_hu"]) > BRIGHT_HU - 60
    summary = json.loads(result.volumes_json.read_text())
    assert summary["organs"][BRIGHT_CLASS - 1]["voxels"] == found.sum()


def test_dicom_series_prediction_is_in_the_series_ras_geometry(realdata, tmp_path):
    from amoseg.data.dicom import load_dicom_series

    folder = realdata / "example_ct" / "dicom"
    backend = backend_for_model(ThresholdModel(64), device="cpu")
    result = predict_scan(backend, ScanInput(folder, "dicom", "series"), tmp_path)
    series = load_dicom_series(folder)
    labels = assert_same_geometry(result.seg_path, series)
    assert labels.shape == (512, 512, 20)
    assert nib.load(str(result.seg_path)).header["sform_code"] == 1


def test_organ_volumes_counts_ml_and_mean_hu():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0, :2, :3] = 1  # 6 voxels
    labels[3, 4, 5] = 15
    image = np.full(labels.shape, -50.0, np.float32)
    image[labels == 1] = np.arange(6) * 10.0
    rows = organ_volumes(labels, image, np.diag([2.0, -2.0, 3.0, 1.0]))  # 12 mm³ voxels
    assert len(rows) == 15 and rows[0]["organ"] == "spleen"
    assert rows[0]["voxels"] == 6 and rows[0]["volume_ml"] == pytest.approx(0.072)
    assert rows[0]["mean_hu"] == pytest.approx(25.0)
    assert rows[14]["voxels"] == 1 and rows[14]["mean_hu"] == pytest.approx(-50.0)
    assert rows[5]["voxels"] == 0 and rows[5]["mean_hu"] is None


def test_largest_component_keeps_one_body_per_organ():
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[2:8, 2:8, 2:6] = 1  # big spleen
    labels[15:17, 15:17, 7:9] = 1  # spleen island: removed
    labels[8, 8, 6] = 1  # touches the big one at a corner only: kept (26-connectivity)
    labels[10:14, 2:5, 1:3] = 6  # liver: single body, untouched
    labels[0, 19, 0] = 6  # liver speck: removed
    out = largest_component_per_organ(labels)
    assert out[15:17, 15:17, 7:9].sum() == 0 and out[0, 19, 0] == 0
    assert out[8, 8, 6] == 1
    assert (out == 1).sum() == 6 * 6 * 4 + 1 and (out == 6).sum() == 4 * 3 * 2
    np.testing.assert_array_equal(largest_component_per_organ(out), out)


# ---- CLI ---------------------------------------------------------------------------------


def _write(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _bad_inputs(tmp: Path, realdata: Path) -> dict[str, tuple[Path, str]]:
    tmp.mkdir(exist_ok=True)
    text = tmp / "notes.nii.gz"
    text.write_text("not an image\n")
    truncated = tmp / "cut.nii.gz"
    truncated.write_bytes(gzip.compress(b"x" * 5000)[:300])
    empty = tmp / "empty_folder"
    empty.mkdir()
    mixed = tmp / "mixed_dicom"
    mixed.mkdir()
    import pydicom

    for i, src in enumerate(sorted((realdata / "example_ct" / "dicom").iterdir())[:4]):
        ds = pydicom.dcmread(src)
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.{1 + i % 2}"
        ds.save_as(mixed / src.name)
    return {
        "2d": (_write(tmp / "flat.nii.gz", np.zeros((8, 8), np.int16)), "3D volume"),
        "4d": (_write(tmp / "multi.nii.gz", np.zeros((8, 8, 4, 3), np.int16)), "3D volume"),
        "text": (text, "image file"),
        "truncated": (truncated, "image file"),
        "not_nifti": (tmp / "notes.txt", "not found"),
        "empty": (empty, "empty"),
        "mixed_dicom": (mixed, "mixes 2 DICOM series"),
    }


def test_cli_each_bad_input_gives_one_clear_line(threshold_run, realdata, tmp_path, capsys):
    cases = _bad_inputs(tmp_path / "bad", realdata)
    (tmp_path / "bad" / "notes.txt").write_text("hello")
    cases["not_nifti"] = (tmp_path / "bad" / "notes.txt", "not a .nii/.nii.gz file")
    for name, (path, message) in cases.items():
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(threshold_run), str(path), "-o", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exc.value.code == 2, name
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert message in lines[0] and str(path) in lines[0], (name, lines[0])
        assert "Traceback" not in err
    assert not list(tmp_path.glob("out/*"))  # nothing written for a failed scan


def test_cli_batch_processes_good_inputs_and_lists_failures(
    threshold_run, realdata, tmp_path, capsys
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(realdata / "example_ct" / "ct.nii.gz", inputs / "ct.nii.gz")
    text = tmp_path / "broken.nii.gz"
    text.write_text("not an image")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(threshold_run), str(text), str(inputs), str(tmp_path / "missing"),
              "-o", str(out), "--overlay", "--postprocess", "lcc"])  # fmt: skip
    captured = capsys.readouterr()
    assert exc.value.code == 2
    assert "Traceback" not in captured.err
    assert "2 input(s) failed" in captured.err and "2 of 3 inputs failed" in captured.err
    assert str(text) in captured.err and "missing" in captured.err
    assert str(out / "ct_seg.nii.gz") in captured.out
    for suffix in ("_seg.nii.gz", "_volumes.csv", "_volumes.json", "_overlay.png"):
        assert (out / f"ct{suffix}").is_file(), suffix
    assert (out / "ct_overlay.png").read_bytes()[:4] == b"\x89PNG"
    assert_same_geometry(out / "ct_seg.nii.gz", nib.load(str(realdata / "example_ct/ct.nii.gz")))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_cli_success_exits_zero(threshold_run, realdata, tmp_path, capsys):
    main(["predict", str(threshold_run), str(realdata / "example_ct" / "ct.nii.gz"),
          "-o", str(tmp_path / "o"), "--device", "cpu", "--batch-size", "3"])  # fmt: skip
    assert (tmp_path / "o" / "ct_seg.nii.gz").is_file()
    assert "ct_seg.nii.gz" in capsys.readouterr().out


def test_bad_options_are_user_errors(threshold_run, tmp_path, capsys):
    bad = (["--postprocess", "blur"], ["--backend", "tf"], ["--device", "tpu"])
    for extra in (*bad, ["--precision", "x"]):
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(threshold_run), str(tmp_path), "-o", str(tmp_path / "o"), *extra])
        assert exc.value.code == 2
        assert capsys.readouterr().err.startswith("error: unknown")


def test_missing_run_folder_is_a_user_error(tmp_path):
    from amoseg.inference import load_model

    with pytest.raises(AmosegError, match="run folder not found"):
        load_model(tmp_path / "nope")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_pipeline_matches_cpu():
    from tests.predict_models import TinyConvModel

    affine = np.diag([-0.7, 0.7, 2.5, 1.0])
    data = _ct_like((96, 80, 12), seed=2).astype(np.int16)
    data[20:60, 30:50, 3:9] = 400
    for model in (ThresholdModel(64), TinyConvModel(48)):
        cpu = segment_scan(backend_for_model(model, "cpu"), data, affine)
        gpu = segment_scan(backend_for_model(model, "cuda"), data, affine)
        assert (cpu == gpu).mean() >= 0.999, type(model).__name__


def test_cli_warns_once_about_a_tilted_series_and_a_disagreeing_pixdim(threshold_run, tmp_path):
    """What the readers noticed reaches the user as one `warning:` line per scan and is
    kept in the volumes JSON; the scans are still segmented (on the affine's grid)."""
    from tests.badfiles import amoseg_inprocess
    from tests.dicom_series import tilted_positions, write_series

    volume = np.full((32, 32, 6), -1000, np.int16)
    volume[8:20, 8:20, :] = 60
    write_series(tmp_path / "tilted", volume, tilted_positions(6, 15.0))
    img = nib.Nifti1Image(volume, np.diag([0.8, 0.8, 3.0, 1.0]))
    img.header["pixdim"][1:4] = 1.0  # the sform keeps 3 mm slices
    nib.save(img, str(tmp_path / "pixdim.nii.gz"))
    for scan, expected in (
        (tmp_path / "tilted", "tilted: DICOM series has a gantry tilt 15.0 deg resampled upright"),
        (tmp_path / "pixdim.nii.gz", "pixdim.nii.gz: pixdim (1, 1, 1) mm disagrees"),
    ):
        res = amoseg_inprocess("predict", threshold_run, scan, "-o", tmp_path / "out")
        assert res.returncode == 0, res.stderr
        warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1 and expected in warnings[0], res.stderr
        assert "UserWarning" not in res.stderr
        name = scan.name.removesuffix(".nii.gz")
        notes = json.loads((tmp_path / "out" / f"{name}_volumes.json").read_text())["notes"]
        assert len(notes) == 1 and expected in notes[0]
