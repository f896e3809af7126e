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

from amoseg.devices import resolve_device
from amoseg.errors import AmosegError
from amoseg.models.networks import use_strided_pooling
from amoseg.ops.inferers import Inferer, SliceInferer

__all__ = ["ModelBackend", "OnnxBackend", "ScoreBackend", "TorchBackend", "resolve_device"]

ONNX_INPUT = "image"
ONNX_OUTPUT = "logits"
#: ONNX metadata keys an amoseg export carries (older exports have none: fixed S, no crop).
ONNX_META = ("amoseg.input_size", "amoseg.context", "amoseg.body_threshold", "amoseg.multiple")

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

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1+2c, S, S) float32 on `device` → (B, 16, S, S) float logits on `device`."""
        ...

    def inferer(self, batch_size: int) -> Inferer:
        """How `scores` runs over a whole volume (`amoseg.ops.inferers`)."""
        ...


def slice_inferer(backend: ScoreBackend, batch_size: int) -> SliceInferer:
    """The 2D / 2.5D inferer for a slice backend, from its current settings (so turning
    `body_threshold` off, as `--no-crop` does, takes effect)."""
    return SliceInferer(backend.context, batch_size, backend.body_threshold, backend.size_multiple)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 convolutions in hardware (CPU: AVX512-BF16 or AMX
    through oneDNN; elsewhere bf16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


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

    preprocessor: Any = None  # set by open_backend for planned runs

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
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # slice batches repeat the same shapes
        self.input_size = int(input_size)
        self.context = int(context)
        self.body_threshold = body_threshold
        self.size_multiple = int(size_multiple)
        #: a model's own inferer (e.g. a sliding window for 3D); None: slices, as below
        self.make_inferer = make_inferer

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            layout = torch.channels_last if x.ndim == 4 else torch.channels_last_3d
            x = x.contiguous(memory_format=layout)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                return self.module(x)

    def inferer(self, batch_size: int) -> Inferer:
        if self.make_inferer is not None:
            return self.make_inferer(batch_size)
        return slice_inferer(self, batch_size)


class ModelBackend:
    """Fallback for models without a torch module: their own `predict_batch` probabilities,
    computed on the CPU, as log-probabilities (so every backend hands out logits)."""

    preprocessor: Any = None  # set by open_backend for planned runs

    def __init__(self, model: Any):
        self.model = model
        self.input_size = int(model.input_size)
        self.context = int(getattr(model, "context", 0))
        self.device = torch.device("cpu")
        self.body_threshold: float | None = None
        self.size_multiple = 1

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        _labels, probs = self.model.predict_batch(x.cpu().numpy().astype(np.float32))
        return torch.from_numpy(np.asarray(probs, dtype=np.float32)).clamp_min_(1e-12).log_()

    def inferer(self, batch_size: int) -> Inferer:
        return slice_inferer(self, batch_size)


class OnnxBackend:
    """An exported ONNX file run by ONNX Runtime (CUDA provider when present, else CPU)."""

    preprocessor: Any = None  # set by open_backend for planned runs

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
        if len(shape) != 4 or not isinstance(shape[1], int) or not str(size).isdigit():
            raise AmosegError(
                f"ONNX input has shape {shape}, expected (batch, channels, S, S)",
                onnx_path,
                "export it with `amoseg export`",
            )
        self.input_size = int(size)
        self.context = (int(shape[1]) - 1) // 2
        self.device = torch.device("cpu")
        spatial_dynamic = not isinstance(shape[2], int) and not isinstance(shape[3], int)
        threshold = meta.get("amoseg.body_threshold", "")
        self.body_threshold = float(threshold) if spatial_dynamic and threshold else None
        self.size_multiple = int(meta.get("amoseg.multiple", "1"))
        self.input_name = self.session.get_inputs()[0].name

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(self.session.run(None, feed)[0])

    def inferer(self, batch_size: int) -> Inferer:
        return slice_inferer(self, batch_size)


def backend_for_model(model: Any, device: str = "auto", precision: str = "auto") -> ScoreBackend:
    """TorchBackend when the model can hand out a torch module, else its own predict_batch."""
    export = getattr(model, "export_module", None)
    if export is not None:
        try:
            module = export()
        except NotImplementedError:
            module = None
        if module is not None:
            return TorchBackend(
                module,
                model.input_size,
                getattr(model, "context", 0),
                device,
                trained_bf16=bool(getattr(model, "fast_gpu", False)),
                precision=precision,
                body_threshold=getattr(model, "body_threshold", None),
                size_multiple=int(getattr(model, "size_multiple", 1)),
                # 3D models bring their own inferer (a sliding window over patches)
                make_inferer=model.inferer if getattr(model, "dims", 2) == 3 else None,
            )
    return ModelBackend(model)
