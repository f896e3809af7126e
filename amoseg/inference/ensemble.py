"""Ensembles: several trained models predicting one scan together, as one.

Members are run folders (`amoseg train ... --out RUN`), folders of such runs (a
cross-validation root: every fold), or model packages (`*.amoseg.zip`). Each is read as a
`ModelBundle` and becomes a scoring backend with its own preprocessing and inferer (slices
for 2D models, a sliding window for `unet3d`) in `amoseg.inference.segmenter.Segmenter`, so
folds and configurations (2D + 3D) mix freely: their class probabilities are averaged on the
scan's own grid (`amoseg.inference.predict.scan_probabilities`) before the arg-max.

This module says which command-line arguments are models: `is_model_path` / `split_models`,
`member_runs` (runs named by a path).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from amoseg.errors import AmosegError
from amoseg.inference.bundle import member_runs

__all__ = ["is_model_path", "member_runs", "split_models"]


def is_model_path(path: str | Path) -> bool:
    """Whether a command-line argument names models (runs, a folder of runs, a package, an
    nnU-Net model folder); a DICOM `.zip` is a scan."""
    from amoseg.inference.package import is_package, is_scan_zip
    from amoseg.nnunet_models import is_nnunet_model_dir

    return (
        (is_package(path) and not is_scan_zip(Path(path)))
        or bool(member_runs(path))
        or is_nnunet_model_dir(path)
    )


def split_models(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(model paths, input paths), in the given order: the first argument is always a model
    (`amoseg predict RUN SCAN...`), later ones are models when `is_model_path` says so."""
    if not paths:
        raise AmosegError("no model and no scans given", None, "amoseg predict RUN SCAN -o OUT")
    rest = [Path(p) for p in paths[1:]]
    models = [Path(paths[0])] + [p for p in rest if is_model_path(p)]
    inputs = [p for p in rest if not is_model_path(p)]
    if not inputs:
        raise AmosegError(
            "no scans to segment among the arguments",
            models[-1],
            "pass NIfTI files, folders of them or DICOM series folders after the models",
        )
    return models, inputs
