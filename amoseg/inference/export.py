"""ONNX export of a trained run, for deployment without PyTorch (ONNX Runtime, TensorRT...).

The exported graph is the model's `export_module()`: raw float32 inputs in, logits out,
normalisation inside; the batch axis is dynamic. 2D recipes take slices (batch, 1+2c, H, W)
(H = W = S for a seed run; any size for a planned `2d` run's planes or a body crop), `unet3d`
takes patches (batch, 1, Z, X, Y) of its training size. The file's metadata tells
`OnnxBackend` the rest: `amoseg.input_size`, `amoseg.context`, `amoseg.body_threshold`,
`amoseg.multiple`, and `amoseg.bundle` — the run's portable config.json (recipe, parameters,
the plan configuration the preprocessing comes from), so a planned run's export predicts
exactly as the run does.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from amoseg.atomic import atomic_path
from amoseg.errors import AmosegError
from amoseg.inference.backends import ONNX_BUNDLE, ONNX_INPUT, ONNX_META, ONNX_OUTPUT, ONNX_STATS
from amoseg.inference.bundle import ModelBundle

OPSET = 17
RUN_ONNX = "model.onnx"
CHECKPOINTS = ("checkpoint_best.pt", "checkpoint_latest.pt")


def export_bundle(bundle: ModelBundle, target: str | Path) -> Path:
    """Write a bundle's model as ONNX, its portable config in the file's metadata."""
    from amoseg.inference.package import _portable_config

    return export_onnx(bundle.model("cpu"), target, config=_portable_config(bundle.config))


def run_onnx_path(bundle: ModelBundle) -> Path:
    """RUNDIR/model.onnx, (re)exported when missing or older than the run's checkpoints."""
    run_dir = bundle.source
    target = run_dir / RUN_ONNX
    stamps = [(run_dir / c).stat().st_mtime for c in CHECKPOINTS if (run_dir / c).exists()]
    if not target.exists() or (stamps and target.stat().st_mtime < max(stamps)):
        export_bundle(bundle, target)
    return target


def export_onnx(model: Any, target: str | Path, config: dict[str, Any] | None = None) -> Path:
    """Write `model`'s torch module as ONNX (opset 17, dynamic batch) atomically; `config`
    (the run's portable config.json) travels in the metadata."""
    import json

    import onnx

    target = Path(target)
    try:
        module = model.export_module()
    except NotImplementedError:
        module = None
    if module is None:
        raise AmosegError(
            f"model {getattr(model, 'name', type(model).__name__)!r} has no network to export",
            None,
            "ONNX export needs a neural model (mlp, unet-seed, unet)",
        )
    module = module.to("cpu").float().eval()
    channels = 1 + 2 * int(model.context)
    size = int(model.input_size)
    example = torch.zeros(example_shape(model), dtype=torch.float32)
    # a planned 2d run (no single S: every case has its own plane shape) or a body crop
    dynamic = model.dims == 2 and (exports_crops(model) or size == 0)
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    # a per-image z-score takes the whole image's [mean, std] as a second input
    args: tuple[torch.Tensor, ...] = (example,)
    names, shapes = [ONNX_INPUT], {ONNX_INPUT: axes, ONNX_OUTPUT: axes}
    if getattr(module, "needs_stats", False):
        args = (example, torch.tensor([[0.0, 1.0]] * example.shape[0]))
        names.append(ONNX_STATS)
        shapes[ONNX_STATS] = {0: "batch"}
    crop = exports_crops(model)
    threshold = model.body_threshold if crop else ""
    values = (size, channels // 2, threshold, model.size_multiple)
    with atomic_path(target, suffix=".onnx") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(tmp),
            dynamo=False,  # the dynamo exporter needs onnxscript, not a dependency
            opset_version=OPSET,
            input_names=names,
            output_names=[ONNX_OUTPUT],
            dynamic_axes=shapes,
        )
        graph = onnx.load(str(tmp))
        props = {key: str(value) for key, value in zip(ONNX_META, values, strict=True)}
        if config is not None:
            props[ONNX_BUNDLE] = json.dumps(config)
        onnx.helper.set_model_props(graph, props)
        onnx.save(graph, str(tmp))
    return target


def example_shape(model: Any, batch: int = 2) -> tuple[int, ...]:
    """An input shape the model takes: (batch, 1, *patch) for a 3D recipe, else slices of its
    S (64 for a planned 2d run, whose export takes any plane size)."""
    if model.dims == 3:
        return (batch, 1, *model.patch)
    size = int(model.input_size) or 64
    return (batch, 1 + 2 * int(model.context), size, size)


def exports_crops(model: Any) -> bool:
    """Whether the export takes any height and width (for body crops): the model allows a
    crop, and S is a multiple of its down-sampling factor, so the traced graph holds no
    size-dependent padding."""
    threshold = model.body_threshold
    return threshold is not None and int(model.input_size) % int(model.size_multiple) == 0


def parity_check(model: Any, onnx_path: str | Path, batch: int = 2, seed: int = 0) -> tuple:
    """(label agreement, max |logit difference|) of ONNX Runtime vs PyTorch on a CT-like
    random batch: a quick proof the exported graph computes what the model does."""
    import numpy as np

    from amoseg.inference.backends import OnnxBackend

    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.normal(0.0, 300.0, example_shape(model, batch)).astype(np.float32))
    module = model.export_module().to("cpu").float().eval()
    stats = torch.tensor([0.0, 300.0]) if getattr(module, "needs_stats", False) else None
    with torch.inference_mode():
        ref = (module(x, stats) if stats is not None else module(x)).numpy()
    got = OnnxBackend(onnx_path, device="cpu").scores(x, stats).numpy()
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    return agree, float(np.abs(ref - got).max())
