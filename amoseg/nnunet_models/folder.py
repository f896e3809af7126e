"""An nnU-Net v2 trained model folder, read without nnU-Net: dataset.json, plans.json and
fold_*/checkpoint_final.pth (checkpoint_best.pth where a fold has no final one).

Layout (what `nnUNetv2_train` writes and TotalSegmentator / MRSegmentator ship):
    <Trainer>__<Plans>__<configuration>/{dataset.json, plans.json, fold_0/checkpoint_final.pth}
A cascade (`3d_cascade_fullres`, whose configuration names its `previous_stage`) has its
3d_lowres stage beside it: <Trainer>__<Plans>__3d_lowres (`amoseg.nnunet_models.cascade`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amoseg.errors import AmosegError

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")


def fold_checkpoints(path: Path) -> dict[str, Path]:
    """fold name → its checkpoint (final preferred), for every fold_* folder that has one."""
    found: dict[str, Path] = {}
    for fold in sorted(path.glob("fold_*")):
        for name in CHECKPOINT_NAMES:
            if (fold / name).is_file():
                found[fold.name.removeprefix("fold_")] = fold / name
                break
    return found


def is_nnunet_model_dir(path: str | Path) -> bool:
    """A folder with dataset.json, plans.json and at least one fold checkpoint."""
    p = Path(path)
    return (
        p.is_dir()
        and (p / "dataset.json").is_file()
        and (p / "plans.json").is_file()
        and bool(fold_checkpoints(p))
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AmosegError(f"cannot read {path.name} ({type(exc).__name__})", path) from None
    if not isinstance(value, dict):
        raise AmosegError(f"{path.name} is not a JSON object", path)
    return value


def resolve_configuration(plans: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    """A configuration with its `inherits_from` chain merged in, as nnU-Net's PlansManager
    does (3d_lowres and the cascade inherit from 3d_fullres)."""
    confs = plans.get("configurations", {})
    chain: list[str] = []
    while True:
        if name not in confs:
            raise AmosegError(f"plans.json has no configuration {name!r}", path / "plans.json")
        if name in chain:
            raise AmosegError("plans.json configurations inherit in a circle", path / "plans.json")
        chain.append(name)
        parent = confs[name].get("inherits_from")
        if parent is None:
            break
        name = parent
    merged: dict[str, Any] = {}
    for link in reversed(chain):
        merged.update(copy.deepcopy(confs[link]))
    return merged


@dataclass
class ModelFolder:
    path: Path
    dataset: dict[str, Any]
    plans: dict[str, Any]
    configuration_name: str
    configuration: dict[str, Any]
    checkpoints: dict[str, Path] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """'Dataset777_Tiny 3d_fullres': the dataset and configuration, for tables and cards."""
        return f"{self.plans.get('dataset_name', self.path.parent.name)} {self.configuration_name}"


def read_model_folder(
    path: str | Path, folds: list[str] | None = None, configuration: str | None = None
) -> ModelFolder:
    """The folder's JSON files and chosen folds (all found, or `folds`); one clear line for
    anything missing or unsupported. `configuration`: the one a folder not named by nnU-Net
    holds (its plans may have several)."""
    p = Path(path)
    for name in ("dataset.json", "plans.json"):
        if not (p / name).is_file():
            raise AmosegError(f"not an nnU-Net model folder: no {name}", p)
    dataset, plans = _read_json(p / "dataset.json"), _read_json(p / "plans.json")
    found = fold_checkpoints(p)
    if not found:
        raise AmosegError(
            "nnU-Net model folder has no fold_*/checkpoint_final.pth", p, "train or unpack it"
        )
    if folds is not None:
        missing = [f for f in folds if f not in found]
        if missing:
            raise AmosegError(f"nnU-Net model folder has no fold {missing[0]}", p)
        found = {f: found[f] for f in folds}
    parts = p.name.split("__")
    named = parts[-1] if len(parts) == 3 else configuration
    conf_name = named or _only_configuration(plans, p)
    conf = resolve_configuration(plans, conf_name, p)
    if "regions_class_order" in dataset or any(
        isinstance(v, list | tuple) for v in dataset.get("labels", {}).values()
    ):
        raise AmosegError("region-based nnU-Net models are not supported", p / "dataset.json")
    return ModelFolder(p, dataset, plans, conf_name, conf, found)


def _only_configuration(plans: dict[str, Any], path: Path) -> str:
    """A folder not named <Trainer>__<Plans>__<configuration>: its plans must have one."""
    names = list(plans.get("configurations", {}))
    if len(names) == 1:
        return names[0]
    raise AmosegError(
        "cannot tell the configuration of this nnU-Net model folder",
        path,
        "keep nnU-Net's folder name <Trainer>__<Plans>__<configuration>",
    )
