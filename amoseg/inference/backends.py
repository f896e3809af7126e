"""Where the network runs: PyTorch (CPU/GPU), ONNX Runtime, or a model's own predict_batch.

Every backend maps a batch of raw-intensity slices (B, 1+2c, S, S) to per-class scores
(B, 16, S, S) — logits for networks, probabilities for models without a torch module. The
pipeline in `amoseg.inference.pipeline` resizes those scores, not labels, back to the scan's
grid, so all backends share the same pre- and post-processing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from amoseg.errors import AmosegError

ONNX_INPUT = "image"
ONNX_OUTPUT = "logits"


class ScoreBackend(Protocol):
    input_size: int
    context: int
    device: torch.device

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1+2c, S, S) float32 on `device` → (B, 16, S, S) float scores on `device`."""
        ...


def resolve_device(device: str) -> torch.device:
    """'auto' → CUDA when available; asking for CUDA without one is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AmosegError(
            "--device cuda asked for, but no CUDA GPU is available",
            None,
            "use --device cpu or auto",
        )
    if device not in {"cpu"} and not device.startswith("cuda"):
        raise AmosegError(f"unknown device {device!r}", None, "use auto, cpu or cuda")
    return torch.device(device)


class TorchBackend:
    """The model's exported torch module (normalisation inside) on CPU or GPU.

    With `fast_gpu` on CUDA it runs in bfloat16 autocast with channels-last tensors, as the
    modern recipe trains; the scores come back as float32.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        input_size: int,
        context: int,
        device: str,
        fast_gpu: bool = False,
    ):
        self.device = resolve_device(device)
        self.fast = fast_gpu and self.device.type == "cuda"
        # channels-last on CPU too: ~1.5× faster convolutions, and a contiguous class argmax
        self.module = module.to(self.device).eval().to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # slice batches repeat the same shapes
        self.input_size = int(input_size)
        self.context = int(context)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.fast):
                return self.module(x).float()


class ModelBackend:
    """Fallback for models without a torch module (e.g. logistic regression): their own
    `predict_batch` probabilities, computed on the CPU."""

    def __init__(self, model: Any):
        self.model = model
        self.input_size = int(model.input_size)
        self.context = int(getattr(model, "context", 0))
        self.device = torch.device("cpu")

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        _labels, probs = self.model.predict_batch(x.cpu().numpy().astype(np.float32))
        return torch.from_numpy(np.asarray(probs, dtype=np.float32))


class OnnxBackend:
    """An exported ONNX file run by ONNX Runtime (CUDA provider when present, else CPU)."""

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
        shape = self.session.get_inputs()[0].shape  # ['batch', 1+2c, S, S]
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
            raise AmosegError(
                f"ONNX input has shape {shape}, expected (batch, channels, S, S)",
                onnx_path,
                "export it with `amoseg export`",
            )
        self.input_size = int(shape[3])
        self.context = (int(shape[1]) - 1) // 2
        self.device = torch.device("cpu")
        self.input_name = self.session.get_inputs()[0].name

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)}
        return torch.from_numpy(self.session.run(None, feed)[0])


def backend_for_model(model: Any, device: str = "auto") -> ScoreBackend:
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
                fast_gpu=bool(getattr(model, "fast_gpu", False)),  # bf16 only where trained so
            )
    return ModelBackend(model)
