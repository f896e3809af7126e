"""The one segmenter's defaults: test-time mirroring only along the axes a model trained
invariant to (never for today's 2D recipes), saved post-processing, options checked before
any model loads."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.inference.bundle import read_bundles
from amoseg.inference.segmenter import Segmenter, SegmentOptions, resolve_postprocess
from amoseg.models.registry import model_class
from amoseg.ops.tta import MirroredBackend
from tests.predict_models import FakeBundle, TinyConvModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ct_scan(path: Path) -> Path:
    rng = np.random.default_rng(3)
    data = rng.normal(0, 200, (24, 20, 6)).astype(np.int16)
    data[4:12, 3:9] += 300  # an asymmetric bright block: mirroring would change labels
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0])), path)
    return path


def test_2d_recipes_train_without_flips_and_are_never_mirrored(tiny_unet_run):
    [bundle] = read_bundles(tiny_unet_run)
    assert bundle.recipe == "unet" and bundle.mirror_axes == ()
    segmenter = Segmenter([bundle], SegmentOptions(device="cpu", tta=True))
    assert segmenter.mirror and segmenter.mirrored_bundles == 0
    unet3d = model_class("unet3d")
    assert unet3d.trained_mirror_axes({"augment": True}) == (0, 1, 2)
    assert unet3d.trained_mirror_axes({"augment": False}) == ()


def test_a_3d_bundle_is_mirrored_along_its_trained_axes_only_when_asked():
    bundle = FakeBundle(Path("run3d"), TinyConvModel(32), mirror_axes=(1,))
    plain = Segmenter([bundle], SegmentOptions(device="cpu"))
    assert not plain.mirror and plain.mirrored_bundles == 0  # CPU default: off
    mirrored = Segmenter([bundle], SegmentOptions(device="cpu", tta=True))
    [backend] = mirrored.backends
    assert isinstance(backend, MirroredBackend) and backend.axes == (1,)


def test_predict_tta_leaves_a_2d_model_unchanged(tmp_path, monkeypatch, capsys):
    """The flagship 2D model lost half its Dice to mirroring it never trained for."""
    monkeypatch.setattr(
        "amoseg.inference.segmenter.read_bundles",
        lambda path: [FakeBundle(Path(path), TinyConvModel(32))],
    )
    run = tmp_path / "run"
    run.mkdir()
    scan = ct_scan(tmp_path / "scan.nii.gz")
    for flag in ("--tta", "--no-tta"):
        main(["predict", str(run), str(scan), "-o", str(tmp_path / flag), "--device", "cpu",
              flag])  # fmt: skip
    assert "--tta does not mirror test: trained without flips" in capsys.readouterr().err
    a = np.asarray(nib.load(tmp_path / "--tta" / "scan_seg.nii.gz").dataobj)
    b = np.asarray(nib.load(tmp_path / "--no-tta" / "scan_seg.nii.gz").dataobj)
    assert len(np.unique(b)) > 2  # a random conv net: many classes, not left-right symmetric
    np.testing.assert_array_equal(a, b)


def test_auto_postprocessing_is_the_bundles_common_saved_choice():
    a = FakeBundle(Path("a"), TinyConvModel(32), lcc_organs=[1, 6, 7])
    b = FakeBundle(Path("b"), TinyConvModel(32), lcc_organs=[6, 7, 8])
    none = FakeBundle(Path("c"), TinyConvModel(32))
    assert resolve_postprocess("auto", [a, b]) == [6, 7]
    assert resolve_postprocess("auto", [a, none]) == "none"
    assert resolve_postprocess("lcc", [a]) == "lcc"
    assert resolve_postprocess([7, 6, 6], [none]) == [6, 7]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "fp16"}, "unknown precision"),
        ({"backend": "tensorrt"}, "unknown backend"),
        ({"postprocess": "largest"}, "unknown postprocess"),
        ({"backend": "onnx", "precision": "bf16"}, "needs --backend torch"),
        ({"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_options_fail_before_any_model_loads(options, message, tmp_path):
    with pytest.raises(AmosegError, match=message):
        Segmenter.open(tmp_path / "no-such-run", SegmentOptions(**options))
