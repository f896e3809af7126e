"""ONNX export of a trained run, for deployment without PyTorch (ONNX Runtime, TensorRT...).

The exported graph is the model's `export_module()`: raw float32 slices (batch, 1+2c, S, S)
in, logits (batch, 16, S, S) out, normalisation inside; the batch axis is dynamic, S and
the channel count are fixed and tell `OnnxBackend` the model's input size and context.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from amoseg.atomic import atomic_path
from amoseg.errors import AmosegError
from amoseg.inference.backends import ONNX_INPUT, ONNX_OUTPUT

OPSET = 17


def export_onnx(model: Any, target: str | Path) -> Path:
    """Write `model`'s torch module as ONNX (opset 17, dynamic batch) atomically."""
    target = Path(target)
    export = getattr(model, "export_module", None)
    try:
        module = export() if export is not None else None
    except NotImplementedError:
        module = None
    if module is None:
        raise AmosegError(
            f"model {getattr(model, 'name', type(model).__name__)!r} has no network to export",
            None,
            "ONNX export needs a neural model (mlp, unet-seed, unet)",
        )
    module = module.to("cpu").float().eval()
    channels = 1 + 2 * int(getattr(model, "context", 0))
    size = int(model.input_size)
    example = torch.zeros((2, channels, size, size), dtype=torch.float32)
    with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=False,  # the dynamo exporter needs onnxscript, not a dependency
            opset_version=OPSET,
            input_names=[ONNX_INPUT],
            output_names=[ONNX_OUTPUT],
            dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
        )
    return target


def parity_check(model: Any, onnx_path: str | Path, batch: int = 2, seed: int = 0) -> tuple:
    """(label agreement, max |logit difference|) of ONNX Runtime vs PyTorch on a CT-like
    random batch: a quick proof the exported graph computes what the model does."""
    import numpy as np

    from amoseg.inference.backends import OnnxBackend

    rng = np.random.default_rng(seed)
    channels = 1 + 2 * int(getattr(model, "context", 0))
    size = int(model.input_size)
    x = rng.normal(0.0, 300.0, (batch, channels, size, size)).astype(np.float32)
    with torch.inference_mode():
        ref = model.export_module().to("cpu").float().eval()(torch.from_numpy(x)).numpy()
    got = OnnxBackend(onnx_path, device="cpu").scores(torch.from_numpy(x)).numpy()
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    return agree, float(np.abs(ref - got).max())
