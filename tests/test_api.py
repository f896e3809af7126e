"""The Python API: amoseg.load(...).segment(...) equals `amoseg predict`, errors as exceptions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import amoseg
from amoseg.cli.main import main
from amoseg.inference.backends import ModelBackend
from amoseg.inference.predict import scan_probabilities
from amoseg.inference.segmenter import Segmenter, SegmentOptions
from tests.predict_models import (
    BRIGHT_CLASS,
    BRIGHT_HU,
    FakeBundle,
    NoNetworkModel,
    ThresholdModel,
)


def small_ct(path: Path) -> Path:
    """A LAS 30×26×7 CT-like scan with a bright block (class 6 for the threshold model)."""
    rng = np.random.default_rng(0)
    data = rng.integers(-150, 50, (30, 26, 7)).astype(np.int16)
    data[5:15, 8:20, 1:5] = 400
    nib.save(nib.Nifti1Image(data, np.diag([-1.2, 1.1, 4.0, 1.0])), str(path))
    return path


def test_import_amoseg_stays_light():
    heavy = "('torch', 'nibabel', 'numpy')"
    code = f"import amoseg, sys; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert callable(amoseg.load) and callable(amoseg.segment)


def test_segment_equals_the_cli_output(tiny_unet_run, tmp_path):
    scan = small_ct(tmp_path / "scan.nii.gz")
    main(["predict", str(tiny_unet_run), str(scan), "-o", str(tmp_path / "out")])
    cli = nib.load(str(tmp_path / "out" / "scan_seg.nii.gz"))
    model = amoseg.load(tiny_unet_run, device="cpu")
    result = model.segment(scan)
    assert isinstance(result.label, nib.Nifti1Image)
    np.testing.assert_array_equal(np.asarray(result.label.dataobj), np.asarray(cli.dataobj))
    np.testing.assert_array_equal(result.label.affine, cli.affine)
    assert result.label.header.get_sform(coded=True)[1] == cli.header.get_sform(coded=True)[1]
    assert [r["organ"] for r in result.volumes][:2] == ["spleen", "right kidney"]
    # a nibabel image in memory, and the one-call form, give the same labels
    in_memory = model.segment(nib.load(str(scan)))
    np.testing.assert_array_equal(np.asarray(in_memory.label.dataobj), np.asarray(cli.dataobj))
    one_call = amoseg.segment(scan, model=tiny_unet_run)
    np.testing.assert_array_equal(np.asarray(one_call.label.dataobj), np.asarray(cli.dataobj))


def test_batch_calls_reuse_one_loaded_model(tiny_unet_run, tmp_path):
    scans = [small_ct(tmp_path / f"s{i}.nii.gz") for i in range(3)]
    model = amoseg.load(tiny_unet_run, device="cpu")
    backend = model.backend
    results = list(model.segment_many(scans))
    assert len(results) == 3 and model.backend is backend
    assert all(r.label.shape == (30, 26, 7) for r in results)


def test_probabilities_on_the_scan_grid_agree_with_the_labels(tmp_path):
    scan = nib.load(str(small_ct(tmp_path / "p.nii.gz")))
    data = np.asarray(scan.dataobj)
    bundle = FakeBundle(tmp_path, ThresholdModel(32))
    model = amoseg.Model(Segmenter([bundle], SegmentOptions(device="cpu")), tmp_path)
    result = model.segment(scan, probabilities=True)
    probs = result.probabilities
    assert probs.shape == (16, 30, 26, 7) and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=1e-2)
    labels = np.asarray(result.label.dataobj)
    assert (probs.argmax(0) == labels).mean() > 0.99
    assert (labels[6:14, 9:19, 1:5] == BRIGHT_CLASS).all()  # the bright block's interior
    assert ((labels == BRIGHT_CLASS) == (data > BRIGHT_HU)).mean() > 0.98
    # models without a network hand out probabilities themselves: no second softmax
    plain = scan_probabilities(ModelBackend(NoNetworkModel(32)), data, scan.affine)
    assert float(plain.max()) > 0.99


def test_errors_are_amoseg_errors_with_the_cli_line(tiny_unet_run, tmp_path):
    with pytest.raises(amoseg.AmosegError, match="run folder not found"):
        amoseg.load(tmp_path / "nothing")
    model = amoseg.load(tiny_unet_run, device="cpu")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(amoseg.AmosegError) as info:
        model.segment(bad)
    assert str(bad) in info.value.line() and "\n" not in info.value.line()
    with pytest.raises(amoseg.AmosegError, match="cannot segment a list"):
        model.segment([1, 2])  # type: ignore[arg-type]
    with pytest.raises(amoseg.AmosegError, match="3D"):
        model.segment(nib.Nifti1Image(np.zeros((4, 4), np.int16), np.eye(4)))


@pytest.mark.slow
def test_real_ct_through_the_api(tiny_unet_run, realdata):
    result = amoseg.load(tiny_unet_run, device="cpu").segment(realdata / "example_ct" / "ct.nii.gz")
    source = nib.load(str(realdata / "example_ct" / "ct.nii.gz"))
    assert result.label.shape == source.shape
    np.testing.assert_array_equal(result.label.affine, source.affine)
    assert result.volume_ml("liver") >= 0.0


def test_arrays_tensors_and_simpleitk_images_give_the_files_labels(tiny_unet_run, tmp_path):
    """The API takes what a notebook holds: a numpy array or torch tensor with its spacing
    or affine, or a SimpleITK image (LPS world), and returns the same labels as the file."""
    import SimpleITK as sitk
    import torch

    path = small_ct(tmp_path / "scan.nii.gz")
    model = amoseg.load(tiny_unet_run, device="cpu")
    image = nib.load(str(path))
    expected = np.asarray(model.segment(path).label.dataobj)
    data = np.asarray(image.dataobj)
    by_affine = model.segment(data, affine=image.affine)
    np.testing.assert_array_equal(np.asarray(by_affine.label.dataobj), expected)
    np.testing.assert_array_equal(by_affine.label.affine, image.affine)
    by_tensor = model.segment(torch.from_numpy(data), affine=image.affine)
    np.testing.assert_array_equal(np.asarray(by_tensor.label.dataobj), expected)
    itk = model.segment(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(np.asarray(itk.label.dataobj), expected)
    np.testing.assert_allclose(itk.label.affine, image.affine, atol=1e-5)
    if np.allclose(image.affine, np.diag([*image.header.get_zooms()[:3], 1.0])):
        by_spacing = model.segment(data, spacing=image.header.get_zooms()[:3])
        np.testing.assert_array_equal(np.asarray(by_spacing.label.dataobj), expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs its geometry"),
        ({"spacing": (1.0, 1.0)}, "three positive numbers"),
        ({"spacing": (1.0, 0.0, 1.0)}, "three positive numbers"),
        ({"affine": np.eye(3)}, "4×4"),
    ],
)
def test_an_array_without_usable_geometry_is_one_line(tiny_unet_run, kwargs, message):
    model = amoseg.load(tiny_unet_run, device="cpu")
    with pytest.raises(amoseg.AmosegError, match=message):
        model.segment(np.zeros((8, 8, 4), np.int16), **kwargs)


def test_results_save_nifti_and_the_viewer(tiny_unet_run, tmp_path):
    path = small_ct(tmp_path / "scan.nii.gz")
    result = amoseg.load(tiny_unet_run, device="cpu").segment(path)
    saved = nib.load(str(result.save(tmp_path / "seg.nii.gz")))
    np.testing.assert_array_equal(np.asarray(saved.dataobj), np.asarray(result.label.dataobj))
    page = result.save_viewer(tmp_path / "view.html").read_text()
    assert page.startswith("<!") and "scan.nii.gz" in page
