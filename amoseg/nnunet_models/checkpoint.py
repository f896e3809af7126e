"""Load an nnU-Net v2 checkpoint without unpickling arbitrary objects.

Real trained checkpoints carry numpy scalars in `_best_ema` and `logging` (nnU-Net #2681), so a
plain `torch.load(weights_only=True)` refuses them. We allow exactly those numpy globals and
nothing else: any other global in the file is refused in one line.
"""

from __future__ import annotations

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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict (tensors on the CPU); AmosegError for an unreadable file or one that
    holds any object outside the allowlist."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
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
