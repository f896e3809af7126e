"""The CPU fast path of `amoseg predict`: body crop, folded batch norms, bf16 precision."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.inference import OnnxBackend, backend_for_model, export_onnx, segment_scan
from amoseg.inference.backends import TorchBackend, fold_batchnorm, native_bf16, resolve_precision
from amoseg.inference.pipeline import channel_argmax
from amoseg.models.networks import UNet2d, use_strided_pooling
from amoseg.preprocessing.crop import body_box
from tests.predict_models import BRIGHT_CLASS, ThresholdNet, make_tiny_run


def _abdomen(size: int = 128, z: int = 3) -> torch.Tensor:
    """(Z, S, S) air with an elliptic body (rows 30–89, cols 20–107) and a table below it."""
    r, c = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    body = ((r - 59.5) / 30) ** 2 + ((c - 63.5) / 44) ** 2 <= 1
    slab = np.full((size, size), -1000.0, np.float32)
    slab[body] = -60.0
    slab[110:114, :] = 100.0  # the table: body-dense, but not connected to the body
    return torch.from_numpy(np.repeat(slab[None], z, axis=0))


def test_body_box_holds_the_body_plus_margin_and_leaves_out_the_table():
    slices = _abdomen()
    rows, cols = body_box(slices, -500.0, multiple=16)
    assert (rows.stop - rows.start) % 16 == 0 and (cols.stop - cols.start) % 16 == 0
    margin = 128 // 32
    assert rows.start <= 30 - margin and rows.stop >= 90 + margin
    assert cols.start <= 20 - margin and cols.stop >= 108 + margin
    assert rows.stop <= 110, "the table is a separate region and must not widen the box"
    assert min(rows.start, cols.start) >= 0 and max(rows.stop, cols.stop) <= 128


def test_body_box_is_none_without_a_body_or_when_it_fills_the_slice():
    assert body_box(torch.full((2, 64, 64), -1000.0), -500.0) is None
    assert body_box(torch.zeros((2, 64, 64)), -500.0) is None


class _Spy(TorchBackend):
    """Records the spatial size of every batch the network sees."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[int, int]] = []

    def scores(self, x, stats=None):
        self.seen.append(tuple(x.shape[-2:]))
        return super().scores(x, stats)


@pytest.mark.parametrize("size", [96, 256])  # the scan is finer / coarser than the model
def test_crop_gives_the_same_labels_as_whole_slices_for_a_local_model(size):
    volume = _abdomen(160, z=5).permute(1, 2, 0).numpy().copy()
    volume[60:80, 50:70, 1:4] = 400.0  # an organ inside the body
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    whole = _Spy(ThresholdNet(), size, 0, "cpu", precision="fp32")
    cropped = _Spy(ThresholdNet(), size, 0, "cpu", precision="fp32", body_threshold=-500.0)
    cropped.size_multiple = 16
    a = segment_scan(whole, volume, affine)
    b = segment_scan(cropped, volume, affine)
    assert whole.seen[0] == (size, size)
    assert cropped.seen[0][0] * cropped.seen[0][1] < 0.7 * size * size  # it did crop
    np.testing.assert_array_equal(a, b)
    assert (b == BRIGHT_CLASS).sum() == 20 * 20 * 3


def test_folding_batchnorm_keeps_the_outputs():
    torch.manual_seed(0)
    net = UNet2d(3, base=8, depth=2).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, as after training
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = net(x)
        folded = fold_batchnorm(net)
        got = folded(x)
    assert not [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_strided_pooling_gives_the_same_network_outputs():
    torch.manual_seed(0)
    net = UNet2d(3, base=4, depth=3).eval()
    x = torch.randn(2, 3, 48, 40)
    with torch.inference_mode():
        expected = net(x)
        got = use_strided_pooling(net)(x)
    assert net.strided_pool
    torch.testing.assert_close(got, expected, atol=0, rtol=0)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_channel_argmax_takes_bf16_scores_in_either_layout(layout):
    torch.manual_seed(0)
    scores = torch.randn(3, 16, 20, 24).bfloat16().contiguous(memory_format=layout)
    expected = scores.float().argmax(dim=1).to(torch.uint8)
    assert torch.equal(channel_argmax(scores), expected)


def test_precision_rules():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu, trained_bf16=True) is False
    assert resolve_precision("bf16", cpu, trained_bf16=False) is True
    assert resolve_precision("auto", cpu, trained_bf16=False) is False
    assert resolve_precision("auto", cpu, trained_bf16=True) is native_bf16(cpu)
    with pytest.raises(AmosegError, match="unknown precision"):
        resolve_precision("fp64", cpu, trained_bf16=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("tiny_fast"))


@pytest.fixture(scope="module")
def slab(realdata) -> nib.Nifti1Image:
    """A real AMOS CT slab with the patient table in the field of view."""
    return nib.load(str(realdata / "amos_mini" / "imagesTr" / "amos_0001.nii.gz"))


def test_a_trained_unet_crops_and_onnx_crops_the_same_way(tiny_run, slab, tmp_path):
    from amoseg.training import load_run

    model = load_run(tiny_run, device="cpu")
    assert (model.body_threshold, model.size_multiple) == (-500.0, 4)
    data = np.asarray(slab.dataobj)
    torch_backend = backend_for_model(model, "cpu", precision="fp32")
    onnx_backend = OnnxBackend(export_onnx(model, tmp_path / "m.onnx"), device="cpu")
    assert (onnx_backend.body_threshold, onnx_backend.size_multiple) == (-500.0, 4)
    shapes: list[tuple[int, ...]] = []
    run_onnx = onnx_backend.scores
    onnx_backend.scores = lambda x, stats=None: (shapes.append(tuple(x.shape)), run_onnx(x))[1]
    a = segment_scan(torch_backend, data, slab.affine)
    b = segment_scan(onnx_backend, data, slab.affine)
    assert shapes[0][2] * shapes[0][3] < 32 * 32  # it scored the body box only
    assert (a == b).mean() >= 0.999


def test_bf16_and_fp32_label_maps_agree_on_a_real_scan(tiny_run, slab):
    from amoseg.training import load_run

    model = load_run(tiny_run, device="cpu")
    data = np.asarray(slab.dataobj)
    fp32 = segment_scan(backend_for_model(model, "cpu", precision="fp32"), data, slab.affine)
    bf16 = segment_scan(backend_for_model(model, "cpu", precision="bf16"), data, slab.affine)
    assert (fp32 == bf16).mean() >= 0.99


def test_cli_precision_and_crop_options(tiny_run, slab, realdata, tmp_path, capsys):
    scan = realdata / "amos_mini" / "imagesTr" / "amos_0001.nii.gz"
    for i, extra in enumerate((["--precision", "fp32", "--no-crop"], [])):
        main(["predict", str(tiny_run), str(scan), "-o", str(tmp_path / f"o{i}"), *extra])
        assert (tmp_path / f"o{i}" / "amos_0001_seg.nii.gz").is_file()
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(tiny_run), str(scan), "-o", str(tmp_path / "x"),
              "--backend", "onnx", "--precision", "bf16"])  # fmt: skip
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "needs --backend torch" in err
