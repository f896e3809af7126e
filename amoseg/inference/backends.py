"""Where the network runs: PyTorch (CPU/GPU), ONNX Runtime, or a model's own predict_batch.

Every backend is a predictor (`amoseg.ops.inferers`): `scores` maps a batch of
raw-intensity inputs (B, 1+2c, S, S) to per-class logits (B, 16, S, S) (log-probabilities for
models without a torch module), and `inferer(batch_size)` says how to run it over a volume.
The pipeline in `amoseg.inference.pipeline` resizes those scores, not labels, back to the
scan's grid, so all backends share the same pre- and post-processing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch

from amoseg.devices import native_bf16, resolve_device
from amoseg.errors import AmosegError
from amoseg.models.networks import use_strided_pooling
from amoseg.ops.inferers import Inferer, Predictor, SliceInferer

__all__ = ["ModelBackend", "OnnxBackend", "ScoreBackend", "TorchBackend", "resolve_device"]

ONNX_INPUT = "image"
#: (batch, 2) [mean, std] of the whole image: the second input of a per-image z-score export
ONNX_STATS = "stats"
ONNX_OUTPUT = "logits"
#: ONNX metadata keys an amoseg export carries (older exports have none: fixed S, no crop).
ONNX_META = ("amoseg.input_size", "amoseg.context", "amoseg.body_threshold", "amoseg.multiple")
#: the run's portable config.json (recipe, parameters, plan configuration), as JSON text
ONNX_BUNDLE = "amoseg.bundle"

Precision = Literal["auto", "fp32", "bf16"]
PRECISIONS = ("auto", "fp32", "bf16")


class ScoreBackend(Protocol):
    input_size: int
    context: int
    device: torch.device
    #: raw intensity above which a voxel is body, for cropping (None: score the whole slice).
    body_threshold: float | None
    #: crop sides are rounded up to a multiple of this (the network's down-sampling factor).
    size_multiple: int
    #: a planned configuration's `amoseg.preprocessing.Preprocessor` (None: S×S slices).
    preprocessor: Any

    #: whether `scores` needs the whole image's [mean, std] (a per-image z-score)
    needs_stats: bool

    def scores(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1+2c, S, S) float32 on `device` → (B, 16, S, S) float logits on `device`."""
        ...

    def predictor(self, stats: torch.Tensor | None = None) -> Predictor:
        """`scores` for one image, with that image's statistics bound."""
        ...

    def inferer(self, batch_size: int) -> Inferer:
        """How `scores` runs over a whole volume (`amoseg.ops.inferers`)."""
        ...


def slice_inferer(backend: ScoreBackend, batch_size: int) -> SliceInferer:
    """The 2D / 2.5D inferer for a slice backend, from its current settings (so turning
    `body_threshold` off, as `--no-crop` does, takes effect)."""
    return SliceInferer(backend.context, batch_size, backend.body_threshold, backend.size_multiple)


def resolve_precision(precision: str, device: torch.device, trained_bf16: bool) -> bool:
    """True → run in bfloat16 autocast. 'auto' does so only for models trained in bf16
    autocast (`unet`) and only on devices with native bf16; 'fp32' never; 'bf16' always."""
    if precision not in PRECISIONS:
        raise AmosegError(f"unknown precision {precision!r}", None, "use auto, fp32 or bf16")
    if precision == "auto":
        return trained_bf16 and native_bf16(device)
    return precision == "bf16"


def fold_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d in a Sequential into
    the convolution's weights (exact up to float rounding; one pass over memory fewer per
    block, ~20 % of a U-Net's CPU time)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for child in module.children():
        fold_batchnorm(child)
    if isinstance(module, torch.nn.Sequential):
        layers = list(module)
        for i in range(len(layers) - 1):
            conv, norm = layers[i], layers[i + 1]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = torch.nn.Identity()
    return module


class TorchBackend:
    """The model's exported torch module (normalisation inside) on CPU or GPU.

    Batch norms are folded into the convolutions and tensors are channels-last. With bf16
    (see `resolve_precision`) the convolutions run in bfloat16 autocast, on CUDA or on a CPU
    with native bf16, and the scores come back in bfloat16 (the arg-max needs no float32
    copy; resizing converts them)."""

    preprocessor: Any = None  # a planned run's Preprocessor (from its bundle), or None

    def __init__(
        self,
        module: torch.nn.Module,
        input_size: int,
        context: int,
        device: str,
        trained_bf16: bool = False,
        precision: str = "auto",
        body_threshold: float | None = None,
        size_multiple: int = 1,
        make_inferer: Callable[[int], Inferer] | None = None,
    ):
        self.device = resolve_device(device)
        self.bf16 = resolve_precision(precision, self.device, trained_bf16)
        # channels-last on CPU too: ~1.5× faster convolutions, and a contiguous class argmax
        module = fold_batchnorm(module.eval())
        if self.device.type == "cpu":
            use_strided_pooling(module)
        volumetric = any(p.ndim == 5 for p in module.parameters())  # 3D convolutions
        layout = torch.channels_last_3d if volumetric else torch.channels_last
        self.module = module.to(self.device).to(memory_format=layout)
        self.needs_stats = bool(getattr(module, "needs_stats", False))  # a SegNet's z-score
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # slice batches repeat the same shapes
        self.input_size = int(input_size)
        self.context = int(context)
        self.body_threshold = body_threshold
        self.size_multiple = int(size_multiple)
        #: a model's own inferer (e.g. a sliding window for 3D); None: slices, as below
        self.make_inferer = make_inferer

    def scores(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        with torch.inference_mode():
            layout = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
            x = x.contiguous(memory_format=layout)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                return self.module(x, stats) if self.needs_stats else self.module(x)

    def predictor(self, stats: torch.Tensor | None = None) -> Predictor:
        return lambda x: self.scores(x, stats)

    def inferer(self, batch_size: int) -> Inferer:
        if self.make_inferer is not None:
            return self.make_inferer(batch_size)
        return slice_inferer(self, batch_size)


class ModelBackend:
    """Fallback for models without a torch module: their own `predict_batch` probabilities,
    computed on the CPU, as log-probabilities (so every backend hands out logits)."""

    preprocessor: Any = None  # a planned run's Preprocessor (from its bundle), or None

    def __init__(self, model: Any):
        self.model = model
        self.input_size = int(model.input_size)
        self.context = int(model.context)
        self.device = torch.device("cpu")
        self.body_threshold: float | None = None
        self.size_multiple = 1
        self.needs_stats = False

    def scores(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        _labels, probs = self.model.predict_batch(x.cpu().numpy().astype(np.float32))
        return torch.from_numpy(np.asarray(probs, dtype=np.float32)).clamp_min_(1e-12).log_()

    def predictor(self, stats: torch.Tensor | None = None) -> Predictor:
        return self.scores

    def inferer(self, batch_size: int) -> Inferer:
        return slice_inferer(self, batch_size)


class OnnxBackend:
    """An exported ONNX file run by ONNX Runtime (CUDA provider when present, else CPU)."""

    preprocessor: Any = None  # a planned run's Preprocessor (from its bundle), or None

    def __init__(self, onnx_path: str | Path, device: str = "auto"):
        import onnxruntime as ort

        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise AmosegError("ONNX file not found", onnx_path, "create it with `amoseg export`")
        available = ort.get_available_providers()
        providers = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in available:
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(onnx_path), providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise AmosegError(
                "ONNX file cannot be loaded", onnx_path, "re-export it with `amoseg export`"
            ) from exc
        shape = self.session.get_inputs()[0].shape  # ['batch', 1+2c, S or 'height', S or 'width']
        meta = self.session.get_modelmeta().custom_metadata_map
        size = meta.get("amoseg.input_size", shape[-1] if shape else None)
        volumetric = len(shape) == 5 and all(isinstance(n, int) for n in shape[2:])
        if not volumetric and (
            len(shape) != 4 or not isinstance(shape[1], int) or not str(size).isdigit()
        ):
            raise AmosegError(
                f"ONNX input has shape {shape}, expected (batch, channels, S, S)",
                onnx_path,
                "export it with `amoseg export`",
            )
        self.input_size = int(size) if str(size).isdigit() else 0
        self.context = (int(shape[1]) - 1) // 2
        self.device = torch.device("cpu")
        spatial_dynamic = not isinstance(shape[-2], int) and not isinstance(shape[-1], int)
        threshold = meta.get("amoseg.body_threshold", "")
        self.body_threshold = float(threshold) if spatial_dynamic and threshold else None
        self.size_multiple = int(meta.get("amoseg.multiple", "1"))
        self.input_name = self.session.get_inputs()[0].name
        #: a per-image z-score export takes the image's [mean, std] as a second input
        self.needs_stats = any(i.name == ONNX_STATS for i in self.session.get_inputs())
        config = _bundle_config(meta, onnx_path)
        self.preprocessor = _config_preprocessor(config, onnx_path)
        #: 3D exports: the sliding window's patch and overlap
        self.patch = tuple(int(n) for n in shape[2:]) if volumetric else None
        self.overlap = float((config.get("hparams") or {}).get("overlap", 0.5))

    def scores(self, x: torch.Tensor, stats: torch.Tensor | None = None) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)}
        if self.needs_stats:
            if stats is None:
                raise ValueError("this export z-scores per image: pass the image's stats")
            rows = stats.detach().cpu().float().reshape(-1, 2).expand(x.shape[0], 2)
            feed[ONNX_STATS] = np.ascontiguousarray(rows.numpy())
        return torch.from_numpy(self.session.run(None, feed)[0])

    def predictor(self, stats: torch.Tensor | None = None) -> Predictor:
        return lambda x: self.scores(x, stats)

    def inferer(self, batch_size: int) -> Inferer:
        if self.patch is not None:
            from amoseg.ops.inferers import SlidingWindowInferer

            return SlidingWindowInferer(self.patch, max(1, min(batch_size, 4)), self.overlap)
        return slice_inferer(self, batch_size)


def _bundle_config(meta: dict[str, str], path: Path) -> dict[str, Any]:
    """The run config an export carries ({} for exports older than the bundle format)."""
    import json

    text = meta.get(ONNX_BUNDLE)
    if not text:
        return {}
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AmosegError("ONNX file's amoseg.bundle metadata is not JSON", path) from exc
    if not isinstance(config, dict):
        raise AmosegError("ONNX file's amoseg.bundle metadata is not an object", path)
    return config


def _config_preprocessor(config: dict[str, Any], path: Path) -> Any:
    """The plan's Preprocessor a run config names (None: seed S×S slices)."""
    if not config.get("model"):
        return None
    from amoseg.inference.bundle import ModelBundle

    bundle = ModelBundle(source=path, member=None, checkpoint={"model": config["model"]},
                         config=config)  # fmt: skip
    return bundle.preprocessor()


def backend_for_model(model: Any, device: str = "auto", precision: str = "auto") -> ScoreBackend:
    """TorchBackend when the model can hand out a torch module, else its own predict_batch."""
    try:
        module = model.export_module()
    except NotImplementedError:
        return ModelBackend(model)
    return TorchBackend(
        module,
        model.input_size,
        model.context,
        device,
        trained_bf16=model.fast_gpu,
        precision=precision,
        body_threshold=model.body_threshold,
        size_multiple=int(model.size_multiple),
        # 3D models bring their own inferer (a sliding window over patches)
        make_inferer=model.inferer if model.dims == 3 else None,
    )
