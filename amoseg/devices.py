"""Which torch device a command runs on: one rule for train, evaluate and predict."""

from __future__ import annotations

import torch

from amoseg.errors import AmosegError


def mps_available() -> bool:
    """Apple silicon GPU (Metal) through a PyTorch build that has it."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → CUDA when available, else the CPU (never MPS on its own: some operators still
    fall back to the CPU there, so it is asked for by name); asking for CUDA or MPS without
    one, or naming a device torch does not know, is a user error (one line, exit 2)."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AmosegError(
            "CUDA was requested (--device cuda) but no CUDA GPU is available",
            None,
            "use --device cpu or auto",
        )
    if name == "mps":
        if not mps_available():
            raise AmosegError(
                "Apple MPS was requested (--device mps) but is not available here (it needs "
                "macOS on Apple silicon and a PyTorch build with MPS)",
                None,
                "use --device cpu or auto",
            )
        return torch.device("mps")
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise AmosegError(f"unknown device {name!r}", None, DEVICE_HINT) from exc
    if resolved.type not in ("cpu", "cuda"):
        raise AmosegError(f"unknown device {name!r}", None, DEVICE_HINT)
    return resolved


DEVICE_HINT = "use auto, cpu, cuda, cuda:N or mps"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 convolutions in hardware (CPU: AVX512-BF16 or AMX
    through oneDNN; elsewhere bf16 is emulated and slower than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False
