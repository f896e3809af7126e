"""ONNX export of a trained run, for deployment without PyTorch (ONNX Runtime, TensorRT...).

The exported graph is the model's `export_module()`: raw float32 slices (batch, 1+2c, S, S)
in, logits (batch, 16, S, S) out, normalisation inside; the batch axis is dynamic. For
models that may score a body crop (`unet` on CT), height and width are dynamic too. The
file's metadata (`amoseg.input_size`, `amoseg.context`, `amoseg.body_threshold`,
`amoseg.multiple`) tells `OnnxBackend` the run's S, context and crop rule.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from amoseg.atomic import atomic_path
from amoseg.errors import AmosegError
from amoseg.inference.backends import ONNX_INPUT, ONNX_META, ONNX_OUTPUT

OPSET = 17


def export_onnx(model: Any, target: str | Path) -> Path:
    """Write `model`'s torch module as ONNX (opset 17, dynamic batch) atomically."""
    import onnx

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
    crop = exports_crops(model)
    axes = {0: "batch", 2: "height", 3: "width"} if crop else {0: "batch"}
    threshold = model.body_threshold if crop else ""
    values = (size, channels // 2, threshold, getattr(model, "size_multiple", 1))
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
            dynamic_axes={ONNX_INPUT: axes, ONNX_OUTPUT: axes},
        )
        graph = onnx.load(str(tmp))
        props = {key: str(value) for key, value in zip(ONNX_META, values, strict=True)}
        onnx.helper.set_model_props(graph, props)
        onnx.save(graph, str(tmp))
    return target


def exports_crops(model: Any) -> bool:
    """Whether the export takes any height and width (for body crops): the model allows a
    crop, and S is a multiple of its down-sampling factor, so the traced graph holds no
    size-dependent padding."""
    threshold = getattr(model, "body_threshold", None)
    return threshold is not None and int(model.input_size) % int(model.size_multiple) == 0


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
