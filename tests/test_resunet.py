"""unet3d's prediction twin (`amoseg.models.resunet.ResUNet`): MONAI's DynUNet weights load
into it key for key and give the same logits; a model rebuilt for prediction uses it, and
predicting with a unet3d checkpoint imports no MONAI."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from amoseg.models.registry import create_model
from amoseg.models.unet3d import build_resunet, stage_strides
from amoseg.ops.weights import build_loaded


@pytest.mark.parametrize(
    ("patch", "stages", "channels"),
    [((32, 32, 32), 5, 1), ((8, 32, 24), 4, 1), ((16, 16, 16), 3, 16), ((64, 16, 16), 5, 16)],
)
def test_monai_weights_load_into_the_twin_and_give_the_same_logits(patch, stages, channels):
    torch.manual_seed(0)
    strides = stage_strides(patch, stages)
    monai_net = build_resunet(channels, 4, stages, strides).eval()
    with torch.no_grad():  # non-trivial norms, so a swapped norm would show
        for name, p in monai_net.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    state = monai_net.state_dict()
    twin = build_loaded(lambda: build_resunet(channels, 4, stages, strides, plain=True), state)
    assert set(twin.state_dict()) == set(state)  # key for key, the shared skip layers too
    x = torch.randn(2, channels, *patch)
    with torch.no_grad():
        torch.testing.assert_close(twin.eval()(x), monai_net(x), rtol=1e-5, atol=1e-5)


def test_a_model_rebuilt_for_prediction_runs_the_twin():
    from amoseg.models.checkpoint import rebuild_model
    from amoseg.models.resunet import ResUNet

    torch.manual_seed(1)
    model = create_model("unet3d", base=4, stages=3, patch_size=[16, 16, 16])
    ckpt = model.checkpoint_payload()
    served = rebuild_model(ckpt, "cpu", inference=True)
    trained = rebuild_model(ckpt, "cpu")
    assert served.inference_only and not trained.inference_only
    assert isinstance(served.net.core, ResUNet) and not isinstance(trained.net.core, ResUNet)
    assert isinstance(served.export_module().core, ResUNet)
    volume = torch.randn(20, 18, 22) * 200
    a = served.volume_scores(volume)
    b = trained.volume_scores(volume)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_predicting_with_a_unet3d_checkpoint_imports_no_monai(tmp_path):
    torch.manual_seed(2)
    model = create_model("unet3d", base=4, stages=3, patch_size=[16, 16, 16])
    path = tmp_path / "checkpoint_best.pt"
    model.save(path)
    script = textwrap.dedent(
        f"""
        import sys, torch
        from amoseg.inference.backends import backend_for_model
        from amoseg.models.checkpoint import load_checkpoint, rebuild_model
        from amoseg.ops.inferers import label_volume
        model = rebuild_model(load_checkpoint({str(path)!r}), "cpu", inference=True)
        backend = backend_for_model(model, "cpu", "fp32")
        labels = label_volume(backend.inferer(1), torch.randn(20, 18, 22), backend.predictor())
        assert labels.shape == (20, 18, 22), labels.shape
        print(sorted(m for m in sys.modules if m == "monai" or m.startswith("monai.")))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
