"""Ensembles: several trained models predicting one scan together, as one.

Members are run folders (`amoseg train ... --out RUN`), folders of such runs (a
cross-validation root: every fold), or model packages (`*.amoseg.zip`). Each becomes a
scoring backend with its own preprocessing and inferer (slices for 2D models, a sliding
window for `unet3d`), so folds and configurations (2D + 3D) mix freely: their class
probabilities are averaged on the scan's own grid (`amoseg.inference.predict.
scan_probabilities`) before the arg-max. With `tta`, every member is test-time mirrored
(`amoseg.inference.tta`).

The small API other tools build on: `is_model_path` / `split_models` (which CLI arguments
are models), `member_runs` (runs named by a path), `open_members` (paths → backends).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amoseg.errors import AmosegError

RUN_FILES = ("config.json", "checkpoint_best.pt")


def is_run(path: Path) -> bool:
    """A finished (or at least checkpointed) training run folder."""
    return path.is_dir() and all((path / f).is_file() for f in RUN_FILES)


def member_runs(path: str | Path) -> list[Path]:
    """The run folders `path` names: itself, or its sub-folders that are runs (sorted)."""
    path = Path(path)
    if is_run(path):
        return [path]
    if path.is_dir():
        return sorted(p for p in path.iterdir() if is_run(p))
    return []


def is_model_path(path: str | Path) -> bool:
    """Whether a command-line argument names models (runs, a folder of runs, a package)."""
    from amoseg.inference.package import is_package
    from amoseg.nnunet_models import is_nnunet_model_dir

    return is_package(path) or bool(member_runs(path)) or is_nnunet_model_dir(path)


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


def open_members(
    paths: Sequence[str | Path],
    *,
    device: str = "auto",
    precision: str = "auto",
    crop: bool = True,
    tta: bool = False,
    step_size: float = 0.5,
) -> tuple[list[Any], list[Path]]:
    """Model paths → (one scoring backend per member, the run folders among them: where
    saved post-processing choices live). Each member is opened as `amoseg predict` opens a
    run (`open_backend`: its preprocessing, its inferer; a package gives all its members),
    then test-time mirrored with `tta`."""
    from amoseg.inference.package import is_package
    from amoseg.inference.predict import open_backend
    from amoseg.inference.tta import MirroredBackend
    from amoseg.nnunet_models import is_nnunet_model_dir, open_nnunet_model

    backends: list[Any] = []
    runs: list[Path] = []
    nnunet: list[Any] = []  # issue 26: nnU-Net model folders mirror on their own axes
    for path in (Path(p) for p in paths):
        if is_nnunet_model_dir(path):
            nnunet.append(open_nnunet_model(
                path, device=device, precision=precision, step_size=step_size, tta=tta
            ))  # fmt: skip
            continue
        package = is_package(path)
        # a path that is no run: open_backend says what is wrong with it
        for member in [path] if package else (member_runs(path) or [path]):
            opened = open_backend(member, device=device, precision=precision, crop=crop)
            backends.extend(opened if isinstance(opened, list) else [opened])
            if not package:
                runs.append(member)
    if tta:
        backends = [MirroredBackend(b) for b in backends]
    return backends + nnunet, runs
