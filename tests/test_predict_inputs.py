"""What `amoseg predict` reads: DICOM geometry it must refuse, outputs beside the slices,
nested exports, .zip, .nrrd/.mha, nnU-Net channel names; and batches (--continue, the batch
volumes.csv, --format both in a mixed batch, --threads, the stage hook)."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from amoseg.data.dicom import load_dicom_series
from amoseg.errors import AmosegError
from tests.badfiles import amoseg_inprocess
from tests.dicom_series import edit_series, tilted_positions, write_series


def _volume(n: int = 6) -> np.ndarray:
    """32x32xn CT: air, soft tissue, and a bright block the threshold model calls liver."""
    volume = np.full((32, 32, n), -1000, np.int16)
    volume[4:28, 4:28] = 40
    volume[6:14, 8:20, 1:5] = 400
    return volume


def _series(folder: Path, n: int = 6, tilt: float = 0.0, **kwargs) -> list[Path]:
    return write_series(folder, _volume(n), tilted_positions(n, tilt), **kwargs)


def _predict(run: Path, *args) -> tuple[int, str, str]:
    res = amoseg_inprocess("predict", run, *args, "--device", "cpu")
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, res.stdout, res.stderr


def _error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _labels(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


# --- DICOM geometry -----------------------------------------------------------------------


def test_series_without_pixel_spacing_is_refused_not_1mm(tmp_path):
    files = _series(tmp_path / "s")
    edit_series(files, PixelSpacing=None)
    with pytest.raises(AmosegError, match=r"no PixelSpacing \(0028,0030\)") as info:
        load_dicom_series(tmp_path / "s")
    assert "\n" not in info.value.line()


def test_imager_pixel_spacing_is_used_with_a_note(tmp_path):
    files = _series(tmp_path / "s")
    edit_series(files, PixelSpacing=None, ImagerPixelSpacing=[0.6, 0.7])  # rows 0.6, columns 0.7
    with pytest.warns(UserWarning, match="using ImagerPixelSpacing 0.6 x 0.7 mm"):
        img = load_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(img.header.get_zooms(), (0.7, 0.6, 2.0), rtol=1e-6)


def test_sheared_orientation_is_refused_not_axis_aligned(tmp_path):
    """Row and column directions 70° apart: ITK silently falls back to an identity grid."""
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    _series(tmp_path / "s", orientation=(1.0, 0.0, 0.0, s, c, 0.0))
    with pytest.raises(AmosegError, match=r"70\.0° apart, not 90°"):
        load_dicom_series(tmp_path / "s")


def test_format_both_on_a_tilted_series_writes_the_nifti_and_says_why_no_seg(
    threshold_run, tmp_path
):
    _series(tmp_path / "tilted", n=8, tilt=15.0)
    out = tmp_path / "out"
    code, _out, err = _predict(threshold_run, tmp_path / "tilted", "-o", out, "--format", "both")
    assert code == 0, err
    assert (out / "tilted_seg.nii.gz").is_file() and not (out / "tilted_seg.dcm").exists()
    assert "NIfTI only, no DICOM-SEG (the series is gantry-tilted" in err
    # dicom-seg alone: refused before the model runs, nothing written
    code, _out, err = _predict(
        threshold_run, tmp_path / "tilted", "-o", tmp_path / "o2", "--format", "dicom-seg"
    )
    assert code == 2 and "gantry-tilted" in _error(err) and not (tmp_path / "o2").exists()


def test_format_dicom_seg_without_pixel_spacing_is_refused_up_front(threshold_run, tmp_path):
    files = _series(tmp_path / "s")
    edit_series(files, PixelSpacing=None, ImagerPixelSpacing=[0.8, 0.8])
    code, _out, err = _predict(
        threshold_run, tmp_path / "s", "-o", tmp_path / "out", "--format", "dicom-seg"
    )
    assert code == 2 and "no PixelSpacing" in _error(err)
    assert not (tmp_path / "out").exists()


# --- outputs beside the slices --------------------------------------------------------------


def test_outputs_written_into_the_dicom_folder_do_not_break_the_next_run(threshold_run, tmp_path):
    folder = tmp_path / "series"
    _series(folder)
    (folder / "notes.txt").write_text("clinical notes\n")
    args = ("-o", folder, "--format", "both", "--html", "--overlay")
    code, _out, err = _predict(threshold_run, folder, *args)
    assert code == 0, err
    assert {"series_seg.dcm", "series_seg.nii.gz", "series_volumes.json"} <= {
        p.name for p in folder.iterdir()
    }
    first = _labels(folder / "series_seg.nii.gz")
    # a renamed DICOM-SEG among the slices is a SEG, not a slice: skipped too
    shutil.copy(folder / "series_seg.dcm", folder / "renamed.dcm")
    code, _out, err = _predict(threshold_run, folder, *args, "--overwrite")
    assert code == 0, err
    np.testing.assert_array_equal(_labels(folder / "series_seg.nii.gz"), first)
    assert "warning" not in err


# --- nested exports, .zip, --series ---------------------------------------------------------


def _export(root: Path) -> tuple[str, str]:
    """patient/study/{ct,mr}: a CT series and an MR series of one study."""
    ct = _series(root / "patient" / "study" / "ct")
    mr = _series(root / "patient" / "study" / "mr")
    edit_series(mr, Modality="MR", SeriesDescription="T1 axial")
    return str(pydicom.dcmread(ct[0]).SeriesInstanceUID), str(
        pydicom.dcmread(mr[0]).SeriesInstanceUID
    )


def test_nested_export_takes_the_only_ct_and_series_chooses(threshold_run, tmp_path):
    ct_uid, mr_uid = _export(tmp_path / "export")
    code, _out, err = _predict(threshold_run, tmp_path / "export", "-o", tmp_path / "a")
    assert code == 0, err
    assert f"segmenting the only CT series {ct_uid}" in err and "--series" in err
    assert (_labels(tmp_path / "a" / "export_seg.nii.gz") == 6).sum() == 8 * 12 * 4
    code, _out, err = _predict(
        threshold_run, tmp_path / "export", "-o", tmp_path / "b", "--series", mr_uid
    )
    assert code == 0, err
    meta = json.loads((tmp_path / "b" / "export_volumes.json").read_text())
    assert meta["notes"] == []
    code, _out, err = _predict(
        threshold_run, tmp_path / "export", "-o", tmp_path / "c", "--series", "1.2.3"
    )
    line = _error(err)
    assert code == 2 and "no DICOM series 1.2.3" in line and ct_uid in line and mr_uid in line


def test_nested_export_with_two_ct_series_lists_them(tmp_path):
    ct_uid, _mr_uid = _export(tmp_path / "export")
    edit_series(list((tmp_path / "export/patient/study/mr").iterdir()), Modality="CT")
    with pytest.raises(AmosegError, match="mixes 2 DICOM series") as info:
        load_dicom_series(tmp_path / "export")
    assert ct_uid in info.value.line() and "--series" in info.value.line()


def test_dicom_zip_equals_its_folder_and_member_paths_stay_inside(threshold_run, tmp_path):
    files = _series(tmp_path / "series")
    archive = tmp_path / "scan.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for n, path in enumerate(files):  # hostile member names: nothing may land outside
            zf.write(path, f"../../evil_{n}.dcm" if n % 2 else f"/abs/{path.name}")
        zf.writestr("DICOMDIR", b"")
    code, _out, err = _predict(threshold_run, archive, tmp_path / "series", "-o", tmp_path / "out")
    assert code == 0, err
    out = tmp_path / "out"
    zipped, plain = _labels(out / "scan_seg.nii.gz"), _labels(out / "series_seg.nii.gz")
    np.testing.assert_array_equal(zipped, plain)
    assert not list(tmp_path.parent.glob("evil_*")) and not Path("/abs").exists()


def test_zip_past_the_size_cap_is_refused_before_unpacking(tmp_path, monkeypatch):
    from amoseg.data import dicom_find

    files = _series(tmp_path / "series")
    archive = tmp_path / "scan.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, path.name)
    monkeypatch.setattr(dicom_find, "MAX_ZIP_BYTES", 1000)
    with pytest.raises(AmosegError, match="unpacks to"):
        load_dicom_series(archive)
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(AmosegError, match="cannot be opened"):
        load_dicom_series(tmp_path / "bad.zip")


# --- .nrrd / .mha, nnU-Net names ------------------------------------------------------------


def test_nrrd_and_mha_give_the_niftis_labels_and_volumes(threshold_run, tmp_path):
    """The same volume as .nii.gz (nibabel, RAS) and .nrrd/.mha (ITK, LPS): a wrong sign
    flip would give another affine, and the labels would be mirrored against it."""
    import SimpleITK as sitk

    affine = np.array([[-0.8, 0, 0, 10.0], [0, 0.9, 0, -20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    volume = _volume()
    volume[20:30, 2:6, :] = 400  # asymmetric, so a flip would show
    nii = tmp_path / "in" / "ct.nii.gz"
    nii.parent.mkdir()
    nib.save(nib.Nifti1Image(volume, affine), str(nii))
    others = [tmp_path / ext / f"ct.{ext}" for ext in ("nrrd", "mha")]
    for path in others:
        path.parent.mkdir()
        sitk.WriteImage(sitk.ReadImage(str(nii)), str(path))
    code, _out, err = _predict(threshold_run, nii, *others, "-o", tmp_path / "out")
    assert code == 0, err
    out = tmp_path / "out"
    reference = nib.load(str(out / "ct_seg.nii.gz"))
    table = json.loads((out / "ct_volumes.json").read_text())["organs"]
    for name in ("ct_2", "ct_3"):
        seg = nib.load(str(out / f"{name}_seg.nii.gz"))
        np.testing.assert_allclose(seg.affine, reference.affine, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(seg.dataobj), np.asarray(reference.dataobj))
        assert json.loads((out / f"{name}_volumes.json").read_text())["organs"] == table


def test_nnunet_channel_zero_names_the_case_and_score_matches_it(threshold_run, tmp_path):
    images, labels = tmp_path / "imagesTs", tmp_path / "labelsTs"
    volume = _volume()
    for folder, data in ((images, volume), (labels, (volume > 150).astype(np.uint8) * 6)):
        folder.mkdir()
        name = "amos_0007_0000.nii.gz" if folder == images else "amos_0007.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1])), str(folder / name))
    code, _out, err = _predict(threshold_run, images, "-o", tmp_path / "pred")
    assert code == 0, err
    assert (tmp_path / "pred" / "amos_0007_seg.nii.gz").is_file()
    res = amoseg_inprocess("score", tmp_path / "pred", labels, "--json", tmp_path / "s.json")
    assert res.returncode == 0, res.stderr
    # a second channel of the same case is refused: the models take one channel
    shutil.copy(images / "amos_0007_0000.nii.gz", images / "amos_0007_0001.nii.gz")
    second = images / "amos_0007_0001.nii.gz"
    code, _out, err = _predict(threshold_run, second, "-o", tmp_path / "x")
    assert code == 2 and "input channel 1" in _error(err)
    # a case id that merely ends in four digits is not a channel
    code, _out, err = _predict(threshold_run, labels / "amos_0007.nii.gz", "-o", tmp_path / "y")
    assert code == 0 and (tmp_path / "y" / "amos_0007_seg.nii.gz").is_file()


# --- batches ----------------------------------------------------------------------------------


def _batch(tmp_path: Path) -> list[Path]:
    scans = []
    for n in range(3):
        volume = _volume()
        volume[20:22, 20 : 22 + n] = 400
        scans.append(tmp_path / "in" / f"ct{n}.nii.gz")
        scans[-1].parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), str(scans[-1]))
    return scans


def _csv(path: Path) -> list[dict]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_batch_volumes_csv_and_continue(threshold_run, tmp_path):
    scans = _batch(tmp_path)
    out = tmp_path / "out"
    code, _out, err = _predict(threshold_run, *scans, "-o", out)
    assert code == 0, err
    rows = _csv(out / "volumes.csv")
    assert len(rows) == 3 * 15 and {r["scan"] for r in rows} == {"ct0", "ct1", "ct2"}
    liver = {r["scan"]: int(r["voxels"]) for r in rows if r["organ"] == "liver"}
    block = 8 * 12 * 4
    assert liver == {"ct0": block + 4 * 6, "ct1": block + 6 * 6, "ct2": block + 8 * 6}
    # the batch table is an output like any other: refused without --overwrite
    code, _out, err = _predict(threshold_run, *scans, "-o", out)
    assert code == 2 and "output exists" in _error(err)
    # an interrupted batch: ct1 lost its JSON, ct2 its label map; --continue redoes only them
    kept = (out / "ct0_seg.nii.gz").stat().st_mtime_ns
    (out / "ct1_volumes.json").unlink()
    (out / "ct2_seg.nii.gz").unlink()
    (out / "volumes.csv").unlink()
    code, stdout, err = _predict(threshold_run, *scans, "-o", out, "--continue")
    assert code == 0, err
    assert "complete, skipped: ct0" in stdout and "skipped: ct1" not in stdout
    assert (out / "ct0_seg.nii.gz").stat().st_mtime_ns == kept
    assert (out / "ct1_volumes.json").is_file() and (out / "ct2_seg.nii.gz").is_file()
    assert _csv(out / "volumes.csv") == rows  # the skipped scan's rows come from its JSON
    # a JSON that does not parse is not complete
    (out / "ct0_volumes.json").write_text("{")
    code, stdout, err = _predict(threshold_run, *scans, "-o", out, "--continue")
    assert code == 0 and "skipped: ct0" not in stdout and _csv(out / "volumes.csv") == rows


def test_continue_keeps_a_users_label_named_like_an_output(threshold_run, tmp_path):
    scans = _batch(tmp_path)[:2]
    out = tmp_path / "out"
    user = nib.Nifti1Image(np.ones((32, 32, 6), np.uint8), np.eye(4))
    out.mkdir()
    nib.save(user, str(out / "ct0_seg.nii.gz"))
    before = (out / "ct0_seg.nii.gz").read_bytes()
    code, _out, err = _predict(threshold_run, *scans, "-o", out, "--continue")
    assert code == 2 and "output exists" in _error(err)
    assert (out / "ct0_seg.nii.gz").read_bytes() == before


def test_format_both_in_a_mixed_batch_writes_what_each_input_allows(threshold_run, tmp_path):
    nii = _batch(tmp_path)[0]
    _series(tmp_path / "dicom")
    out = tmp_path / "out"
    args = ("-o", out, "--format", "both")
    code, _out, err = _predict(threshold_run, nii, tmp_path / "dicom", *args)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert {"ct0_seg.nii.gz", "dicom_seg.nii.gz", "dicom_seg.dcm"} <= names
    assert "ct0_seg.dcm" not in names and "warning" not in err
    # NIfTI inputs only: no input can get a SEG, so `both` is refused in one line
    code, _out, err = _predict(threshold_run, nii, "-o", tmp_path / "o2", "--format", "both")
    assert code == 2 and "no input is a DICOM series" in _error(err)


def test_threads_option(threshold_run, tmp_path):
    import torch

    scan = _batch(tmp_path)[0]
    code, _out, err = _predict(threshold_run, scan, "-o", tmp_path / "o", "--threads", "0")
    assert code == 2 and "--threads must be >= 1" in _error(err)
    before = torch.get_num_threads()
    try:
        code, _out, err = _predict(threshold_run, scan, "-o", tmp_path / "o", "--threads", "1")
        assert code == 0 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_stage_hook_reports_each_scans_stages_and_network_calls(tmp_path):
    from amoseg.inference import backend_for_model
    from amoseg.inference.inputs import expand_input
    from amoseg.inference.predict import predict_many
    from tests.predict_models import ThresholdModel

    scans = _batch(tmp_path)[:2]
    items = [item for scan in scans for item in expand_input(scan)]
    seen: list[tuple[str, str, int]] = []
    backend = backend_for_model(ThresholdModel(32), "cpu")
    results, failures = predict_many(
        backend, items, tmp_path / "out", batch_size=2,
        on_stage=lambda item, stage, n: seen.append((item.name, stage, n)),
    )  # fmt: skip
    assert not failures and len(results) == 2
    for name in ("ct0", "ct1"):
        stages = [(stage, n) for scan, stage, n in seen if scan == name]
        assert stages[0] == ("load", 0) and stages[-1][0] == "write"
        # 6 slices in batches of 2: three network calls, each told as it starts
        assert max(n for stage, n in stages if stage == "forward") == 3
