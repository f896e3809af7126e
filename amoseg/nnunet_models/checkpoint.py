"""Load an nnU-Net v2 checkpoint without unpickling arbitrary objects.

Real trained checkpoints carry numpy scalars in `_best_ema` and `logging` (nnU-Net #2681), so a
plain `torch.load(weights_only=True)` refuses them. We allow exactly those numpy globals and
nothing else: any other global in the file is refused in one line. A checkpoint read from a
model package arrives as bytes (`data`) and travels on as a `PackedCheckpoint`, which the
backend takes wherever it takes a checkpoint file.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amoseg.errors import AmosegError


def _numpy_globals() -> list[Any]:
    """numpy's scalar reconstructor (under its 1.x and 2.x module names), dtype and the dtype
    classes that pickled numpy scalars refer to."""
    allowed: list[Any] = [np.dtype]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            scalar = __import__(module, fromlist=["scalar"]).scalar
        except (ImportError, AttributeError):
            continue
        allowed.append((scalar, f"{module}.scalar"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType",
                     "BoolDType", "UInt8DType"):  # fmt: skip
            if hasattr(dtypes, name):
                allowed.append(getattr(dtypes, name))
    return allowed


class PackedCheckpoint(os.PathLike):
    """A checkpoint already read (and checked) from a model package, standing where a file
    would: its name (`m.amoseg.zip!members/0/fold_0/checkpoint_final.pth`) names it in
    messages; nothing is ever written to disk."""

    def __init__(self, name: str, checkpoint: dict[str, Any]):
        self.name = name
        self.checkpoint = checkpoint

    def __fspath__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"PackedCheckpoint({self.name!r})"


def load_checkpoint(path: Path | PackedCheckpoint, data: bytes | None = None) -> dict[str, Any]:
    """The checkpoint dict (tensors on the CPU) of the file `path` (or of `data`, the bytes
    `path` names); AmosegError for an unreadable one or one that holds any object outside the
    allowlist."""
    if isinstance(path, PackedCheckpoint):
        return path.checkpoint
    source: Any = path if data is None else io.BytesIO(data)
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        detail = f"global {found.group(1)}" if found else "an unsupported object"
        raise AmosegError(
            f"checkpoint holds an object amoseg does not load ({detail})",
            path,
            "only tensors, numbers and numpy scalars are read; re-save the weights",
        ) from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise AmosegError(f"cannot read checkpoint ({type(exc).__name__})", path) from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise AmosegError("not an nnU-Net checkpoint (no network_weights)", path)
    return checkpoint
