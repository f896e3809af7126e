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
    for key, kind in (("model", str), ("state", dict)):
        if not isinstance(ckpt.get(key), kind):
            raise AmosegError(
                f"checkpoint has no valid '{key}' field", shown, "it is damaged; re-run training"
            )
    if not isinstance(ckpt.get("hparams", {}), dict):
        raise AmosegError("checkpoint has no valid 'hparams' field", shown, "re-run training")
    return ckpt


#: what a checkpoint that does not fit its model raises inside torch / the model classes.
MISMATCH_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError)
#: the largest slice side (S) and network a checkpoint may ask for: checked before anything
#: is allocated (a damaged or hostile file could otherwise ask for hundreds of GB).
MAX_INPUT_SIZE = 4096
MAX_PARAMETERS = 2_000_000_000


def check_model_size(cls: type, ckpt: dict[str, Any], shown: Any = None) -> None:
    """Refuse an absurd input size, or a network over MAX_PARAMETERS, built on the meta
    device first (shapes only, no memory)."""
    size = ckpt.get("input_size")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_INPUT_SIZE
    ):
        raise AmosegError(
            f"checkpoint asks for input size {str(size)[:20]} (at most {MAX_INPUT_SIZE})",
            shown,
            "it is damaged or not from amoseg; re-run training",
        )
    from amoseg.ops.weights import shapes_only

    model = shapes_only(lambda: cls(input_size=size, **ckpt["hparams"]))
    net = getattr(model, "net", None)
    n = sum(p.numel() for p in net.parameters()) if isinstance(net, torch.nn.Module) else 0
    if n > MAX_PARAMETERS:
        raise AmosegError(
            f"checkpoint asks for a network of {n:,} parameters (at most {MAX_PARAMETERS:,})",
            shown,
            "it is damaged or not from amoseg; re-run training",
        )


def rebuild_model(
    ckpt: dict[str, Any], device: str = "auto", shown: Any = None, inference: bool = False
) -> Any:
    """The model a loaded checkpoint holds; fields that do not fit the model class (missing,
    renamed, wrong shapes) are one line, not a traceback from deep inside torch.
    `inference`: for prediction only (`amoseg.models.torch_model.inference_build`)."""
    import contextlib

    from amoseg.models.registry import model_class
    from amoseg.models.torch_model import inference_build

    try:
        cls = model_class(ckpt["model"])
    except AmosegError as exc:  # a model this amoseg does not have: name the file
        raise AmosegError(f"checkpoint holds an {exc.what}", shown, exc.hint) from exc
    try:
        with inference_build() if inference else contextlib.nullcontext():
            check_model_size(cls, ckpt, shown)
            return cls.from_checkpoint(ckpt, device)
    except AmosegError:
        raise
    except MISMATCH_ERRORS as exc:
        reason = " ".join(str(exc).split())[:160]
        raise AmosegError(
            f"checkpoint does not fit model '{ckpt['model']}' ({type(exc).__name__}: {reason})",
            shown,
            "it is damaged or from another amoseg version; re-run training",
        ) from exc


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write a checkpoint atomically (temp file, then rename)."""
    from amoseg.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
