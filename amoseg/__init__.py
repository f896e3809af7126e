"""amoseg: abdominal multi-organ segmentation of CT/MRI scans on AMOS22.

`amoseg.load(RUN_OR_PACKAGE).segment(scan)` and `amoseg.segment(scan, model=...)` are the
Python API (`amoseg.api`); they are imported on first use, so `import amoseg` stays light.
"""

from __future__ import annotations

from typing import Any

from amoseg._version import __version__
from amoseg.errors import AmosegError

__all__ = ["AmosegError", "Model", "Segmentation", "__version__", "load", "segment"]

_API = ("Model", "Segmentation", "load", "segment")


def __getattr__(name: str) -> Any:
    if name in _API:
        from amoseg import api

        return getattr(api, name)
    raise AttributeError(f"module 'amoseg' has no attribute {name!r}")
