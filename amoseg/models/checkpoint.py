"""The checkpoint file every model writes and reads: a dict of tensors and plain Python."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any

import torch

from amoseg.errors import AmosegError

CHECKPOINT_FORMAT = "amoseg-checkpoint"


def load_checkpoint(path: Path | IO[bytes], name: Path | None = None) -> dict[str, Any]:
    """Read an amoseg checkpoint safely (weights_only: tensors and plain Python only).

    `path` may be an open binary stream (a model package's member); `name` then says which
    file errors should name."""
    shown = name if name is not None else path
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise AmosegError("checkpoint not found", shown) from exc
    except Exception as exc:  # truncated / foreign pickle: one clear line
        raise AmosegError(
            f"checkpoint is unreadable ({type(exc).__name__})", shown, "re-run training"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise AmosegError("not an amoseg checkpoint", shown, "pass a run folder written by train")
    return ckpt


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically (temp file, then rename)."""
    from amoseg.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
