"""Which torch device a command runs on: one rule for train, evaluate and predict."""

from __future__ import annotations

import torch

from amoseg.errors import AmosegError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' → CUDA when available, else the CPU; asking for CUDA without one, or naming a
    device torch does not know, is a user error (one line, exit 2)."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AmosegError(
            "CUDA was requested (--device cuda) but no CUDA GPU is available",
            None,
            "use --device cpu or auto",
        )
    try:
        resolved = torch.device(name)
    except RuntimeError as exc:
        raise AmosegError(f"unknown device {name!r}", None, "use auto, cpu or cuda") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise AmosegError(f"unknown device {name!r}", None, "use auto, cpu or cuda")
    return resolved
