"""Plans as data: a dataset fingerprint → plan.json with named configurations (seed, 2d, 3d).

`make_plan(root)` fingerprints an AMOS-layout folder and plans it; `load_plan(path)` reads and
validates a (possibly hand-edited) plan.json. Field meanings: docs/plan.md.
"""

from __future__ import annotations

import math
from pathlib import Path

from amoseg.planning.plan import (
    TRAIN_ON,
    Configuration,
    Plan,
    check_memory_gb,
    load_plan,
    save_plan,
)

__all__ = ["Configuration", "Plan", "load_plan", "make_plan", "resolve_train_on", "save_plan"]


def make_plan(
    root: str | Path,
    *,
    size: int = 640,
    memory_gb: float = 8.0,
    modality: str = "all",
    progress: bool = True,
    lowres: tuple[float, float, float] | None = None,
    train_on: str = "auto",
) -> Plan:
    """Fingerprint every labelled case of `root` (of `modality`) and plan the dataset
    (`lowres`: the 3d_lowres spacing instead of nnU-Net's rule; `train_on`: see
    `resolve_train_on`)."""
    from amoseg.data.datasets import find_cases
    from amoseg.errors import AmosegError
    from amoseg.planning.fingerprint import fingerprint_dataset
    from amoseg.planning.planner import plan_dataset

    if not isinstance(size, int) or not 1 <= size <= 4096:
        raise AmosegError(f"--size must be 1..4096, got {size}")
    check_memory_gb(memory_gb)
    train_on = resolve_train_on(train_on)
    if lowres is not None and not (
        len(lowres) == 3 and all(math.isfinite(v) and 0.1 <= v <= 50 for v in lowres)
    ):
        raise AmosegError(f"--lowres-spacing must be 1 or 3 values of 0.1..50 mm, got {lowres}")
    cases = [c for c in find_cases(Path(root)) if modality in ("all", c.modality)]
    if not cases:
        raise AmosegError(f"no {modality.upper()} cases to plan from", root, "use --modality all")
    fp = fingerprint_dataset(cases, progress=progress)
    return plan_dataset(
        fp,
        size=size,
        memory_gb=memory_gb,
        dataset=str(Path(root).resolve()),
        lowres=lowres,
        train_on=train_on,
    )


def resolve_train_on(train_on: str) -> str:
    """`plan --train-on`: "gpu" or "cpu" as given; "auto" is "gpu" where a CUDA device is
    visible at planning time, else "cpu". The choice is written into plan.json, so every
    later step reads it from the plan, wherever it runs."""
    from amoseg.errors import AmosegError

    if train_on in TRAIN_ON:
        return train_on
    if train_on != "auto":
        raise AmosegError(f"--train-on takes auto, cpu or gpu, got {train_on!r}")
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"
