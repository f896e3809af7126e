"""ONNX export and the ONNX backend, with a real (tiny, one-epoch) trained U-Net run."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import onnx
import pytest

from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.inference import OnnxBackend, backend_for_model, export_onnx, segment_scan
from amoseg.ops.inferers import model_labels
from tests.predict_models import NoNetworkModel, TinyConvModel, make_tiny_run
from tests.test_predict import assert_same_geometry


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def ct(realdata) -> nib.Nifti1Image:
    return nib.load(str(realdata / "example_ct" / "ct.nii.gz"))


def test_export_cli_writes_a_valid_opset17_graph(tiny_run, tmp_path, capsys):
    target = tmp_path / "models" / "unet.onnx"
    main(["export", str(tiny_run), "--onnx", str(target)])
    out = capsys.readouterr().out
    assert f"wrote {target}" in out and "input (batch, 3, 32, 32)" in out
    agree = float(out.split("agree on ")[1].split("%")[0])
    assert agree >= 99.9
    graph = onnx.load(str(target))
    onnx.checker.check_model(graph)
    assert graph.opset_import[0].version == 17
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    meta = {p.key: p.value for p in graph.metadata_props}
    bundle = json.loads(meta.pop("amoseg.bundle"))  # the run's portable config.json
    assert bundle["model"] == "unet" and bundle["store"]["configuration"] == "seed"
    assert "path" not in bundle["store"] and str(tiny_run.parent) not in json.dumps(bundle)
    assert meta == {"amoseg.input_size": "32", "amoseg.context": "1",
                    "amoseg.body_threshold": "-500.0", "amoseg.multiple": "4"}  # fmt: skip
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]


def test_onnx_and_torch_label_maps_agree_on_a_real_scan(ct, tmp_path):
    model = TinyConvModel(40, context=1)  # random weights: many classes, a hard parity test
    onnx_path = export_onnx(model, tmp_path / "tiny.onnx")
    backend = OnnxBackend(onnx_path, device="cpu")
    assert (backend.input_size, backend.context) == (40, 1)
    data = np.asarray(ct.dataobj, dtype=np.float32)
    torch_labels = segment_scan(backend_for_model(model, "cpu"), data, ct.affine)
    onnx_labels = segment_scan(backend, data, ct.affine)
    assert len(np.unique(torch_labels)) >= 4
    assert (torch_labels == onnx_labels).mean() >= 0.999


def test_predict_pipeline_matches_validation_on_the_stored_grid(tiny_run):
    from amoseg.training import load_run

    model = load_run(tiny_run, device="cpu")
    rng = np.random.default_rng(3)
    volume = np.round(rng.normal(-50, 120, (32, 32, 7))).astype(np.float32)  # already S×S
    ours = segment_scan(backend_for_model(model, "cpu", "fp32"), volume, np.eye(4))
    theirs = model_labels(model, np.moveaxis(volume, 2, 0), batch_size=3)
    assert (ours == np.moveaxis(theirs, 0, 2)).mean() >= 0.999


def test_predict_cli_with_a_trained_run_torch_and_onnx(tiny_run, realdata, ct, tmp_path, capsys):
    scan = realdata / "example_ct" / "ct.nii.gz"
    for backend in ("torch", "onnx"):
        main(["predict", str(tiny_run), str(scan), "-o", str(tmp_path / backend),
              "--backend", backend, "--device", "cpu"])  # fmt: skip
    assert (tiny_run / "model.onnx").is_file()  # cached export for the onnx backend
    a = assert_same_geometry(tmp_path / "torch" / "ct_seg.nii.gz", ct)
    b = assert_same_geometry(tmp_path / "onnx" / "ct_seg.nii.gz", ct)
    assert (a == b).mean() >= 0.999


def test_run_folder_without_checkpoint_is_one_line(tmp_path, realdata, capsys):
    run = tmp_path / "run"
    run.mkdir()
    scan = realdata / "example_ct" / "ct.nii.gz"
    for extra in ([], ["--backend", "onnx"]):
        with pytest.raises(SystemExit) as exc:
            main(["predict", str(run), str(scan), "-o", str(tmp_path / "o"), *extra])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and "Traceback" not in err
        assert err.count("\n") == 1 and "no checkpoint_best.pt" in err
    with pytest.raises(SystemExit):
        main(["export", str(run), "--onnx", str(tmp_path / "x.onnx")])
    assert "no checkpoint_best.pt" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_model_without_network_cannot_be_exported(tmp_path):
    with pytest.raises(AmosegError, match="no network to export"):
        export_onnx(NoNetworkModel(16), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
