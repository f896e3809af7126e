"""plan.json as typed data: named configurations, validated on load.

A user may edit plan.json; every field is checked when it is read and a wrong one gets one
line naming it (`configurations.2d.spacing must be ...`). Field meanings: docs/plan.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amoseg.atomic import read_json, write_json
from amoseg.errors import AmosegError
from amoseg.preprocessing import Normalisation, Preprocessor

PLAN_VERSION = 1
CONFIGURATIONS = ("seed", "2d", "3d", "3d_lowres", "3d_cascade_fullres")
MODALITIES = ("ct", "mr")
KEEP_CHOICES = ("organ", "all")
MAX_SIZE = 4096
#: target and median spacings (mm) a plan may hold: a hand edit outside this range is a typo
#: (0.0008 for 0.8), not a plan; the voxel cap at resampling (MAX_RESAMPLED_VOXELS) is the
#: allocation guard, this is the message that names the field
MIN_SPACING_MM, MAX_SPACING_MM = 0.05, 100.0
#: GPU memory budget (GiB) a plan may be made for (a node's worth; inf/nan are typos)
MAX_MEMORY_GB = 4096.0
#: entries of a configuration's network.args (the planner writes 2-3)
MAX_NETWORK_ARGS = 64


class PlanError(AmosegError):
    """An invalid plan.json field: one line naming it."""


def _fail(where: str, message: str, path: Path | None) -> PlanError:
    return PlanError(
        f"plan {where} {message}", path, "fix that field, or re-create it with `amoseg plan`"
    )


def _number(value: Any, where: str, path: Path | None, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"must be a finite number, got {value!r}", path)
    if positive and value <= 0:
        raise _fail(where, f"must be > 0, got {value!r}", path)
    return float(value)


def _spacing(value: Any, where: str, path: Path | None) -> tuple[float, float, float]:
    if not isinstance(value, list) or len(value) != 3:
        raise _fail(where, f"must be [x, y, z] in mm, got {str(value)[:80]}", path)
    out = tuple(_number(v, where, path) for v in value)
    for v in out:
        if not MIN_SPACING_MM <= v <= MAX_SPACING_MM:
            raise _fail(
                where, f"must be {MIN_SPACING_MM:g}..{MAX_SPACING_MM:g} mm, got {v!r}", path
            )
    return out  # type: ignore[return-value]


def check_memory_gb(value: float, label: str = "--memory-gb") -> float:
    """A GPU memory budget: finite, > 0 and at most MAX_MEMORY_GB (inf would loop the
    planner's patch search forever)."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise AmosegError(f"{label} must be a finite number > 0, got {value!r}")
    if value > MAX_MEMORY_GB:
        raise AmosegError(f"{label} must be at most {MAX_MEMORY_GB:g} GiB, got {value!r}")
    return float(value)


def _network(value: Any, where: str, path: Path | None) -> Network:
    """A model name and its arguments as plain JSON values. Which arguments the model takes,
    their types and ranges are the recipe's own `Params` (`amoseg.models.registry.
    check_plan_networks` at `prepare`, a layer above, and `train` again)."""
    net = _mapping(value, where, path)
    name = net.get("class")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,39}", name):
        raise _fail(f"{where}.class", f"must name a model, got {str(name)[:40]!r}", path)
    args = _mapping(net.get("args", {}), f"{where}.args", path)
    if len(args) > MAX_NETWORK_ARGS:
        raise _fail(f"{where}.args", f"has {len(args)} entries (at most {MAX_NETWORK_ARGS})", path)
    for key, arg in args.items():
        if not _plain_arg(arg):
            raise _fail(f"{where}.args", f"{key!r} must be a number, true/false, a name or "
                        f"a list of numbers, got {str(arg)[:40]}", path)  # fmt: skip
    return Network(name, dict(args))


def _plain_arg(value: Any) -> bool:
    scalar = (bool, int, float, str, type(None))
    if isinstance(value, list):
        return len(value) <= 64 and all(isinstance(v, scalar) for v in value)
    return isinstance(value, scalar) and (not isinstance(value, str) or len(value) <= 64)


def _integer(value: Any, where: str, path: Path | None, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(where, f"must be an integer in {lo}..{hi}, got {value!r}", path)
    return int(value)


def _mapping(value: Any, where: str, path: Path | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(where, f"must be an object, got {type(value).__name__}", path)
    return value


def _memory(value: Any, where: str, path: Path | None) -> float:
    value = _number(value, f"{where}.memory_budget_gb", path)
    if value > MAX_MEMORY_GB:
        raise _fail(
            f"{where}.memory_budget_gb", f"must be at most {MAX_MEMORY_GB:g}, got {value!r}", path
        )
    return value


#: the devices a plan's networks are sized for (`Plan.train_on`, `amoseg plan --train-on`)
TRAIN_ON = ("gpu", "cpu")


@dataclass(frozen=True)
class Network:
    """The network a configuration trains by default: a registry name and its arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"class": self.name, "args": dict(self.args)}


@dataclass(frozen=True)
class Configuration:
    """One way of preparing and training on the dataset (see docs/plan.md)."""

    name: str
    dims: int  # 2 (slices or 2.5D stacks) or 3 (patches)
    spacing: tuple[float, float, float] | None  # target mm (RAS+ x, y, z); None for seed
    resample_z: bool  # False: z is kept as it is (2d, seed)
    size: int | None  # seed: every slice resized to size×size
    patch_size: tuple[int, ...]  # 2d/seed: (x, y); 3d: (x, y, z) voxels
    batch_size: int
    memory_budget_gb: float
    normalisation: dict[str, Normalisation]  # per modality ("ct", "mr")
    network: Network
    body_crop: float | None  # CT body crop threshold (HU) at preprocessing; None: no crop
    context: int  # 2.5D: adjacent slices on each side
    keep: str  # seed: "organ" (slices with an organ) or "all"; planned: "all"
    #: a cascade stage: the configuration whose prediction is added to the input (nnU-Net's
    #: `previous_stage`); None for a single-stage configuration.
    previous_stage: str | None = None

    def preprocessor(self, modality: str) -> Preprocessor:
        """The Preprocessor for a case of `modality` (the body crop is CT's only)."""
        crop = self.body_crop if modality == "ct" else None
        if self.size is not None:
            return Preprocessor(size=self.size, crop_threshold=crop)
        x, y, z = self.spacing  # type: ignore[misc]
        return Preprocessor(spacing=(x, y, z if self.resample_z else None), crop_threshold=crop)

    def with_overrides(self, **fields: Any) -> Configuration:
        """A copy with run-level overrides (e.g. a run's `patch_size`, `batch_size`),
        checked by the same rules as plan.json (one line naming the field)."""
        if not fields:
            return self
        data = self.to_dict()
        data.update({k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()})
        return Configuration.from_dict(self.name, data)

    def normaliser(self, modality: str) -> Normalisation:
        return self.normalisation.get(modality) or Normalisation("zscore")

    def to_dict(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "spacing": None if self.spacing is None else list(self.spacing),
            "resample_z": self.resample_z,
            "size": self.size,
            "patch_size": list(self.patch_size),
            "batch_size": self.batch_size,
            "memory_budget_gb": self.memory_budget_gb,
            "normalisation": {m: n.to_dict() for m, n in self.normalisation.items()},
            "network": self.network.to_dict(),
            "body_crop": None if self.body_crop is None else {"threshold": self.body_crop},
            "context": self.context,
            "keep": self.keep,
            **({} if self.previous_stage is None else {"previous_stage": self.previous_stage}),
        }

    @classmethod
    def from_dict(cls, name: str, data: Any, path: Path | None = None) -> Configuration:
        where = f"configurations.{name}"
        data = _mapping(data, where, path)
        dims = data.get("dims")
        if dims not in (2, 3):
            raise _fail(f"{where}.dims", f"must be 2 or 3, got {dims!r}", path)
        spacing = data.get("spacing")
        if spacing is not None:
            spacing = _spacing(spacing, f"{where}.spacing", path)
        size = data.get("size")
        if size is not None:
            size = _integer(size, f"{where}.size", path, 1, MAX_SIZE)
        if (size is None) == (spacing is None):
            raise _fail(where, "needs exactly one of size (S×S slices) or spacing (mm)", path)
        resample_z = data.get("resample_z", dims == 3)
        if not isinstance(resample_z, bool):
            raise _fail(f"{where}.resample_z", f"must be true or false, got {resample_z!r}", path)
        patch = data.get("patch_size")
        if not isinstance(patch, list) or len(patch) != dims:
            raise _fail(f"{where}.patch_size", f"must list {dims} sizes, got {patch!r}", path)
        patch = tuple(_integer(v, f"{where}.patch_size", path, 1, MAX_SIZE) for v in patch)
        norm = _mapping(data.get("normalisation", {}), f"{where}.normalisation", path)
        normalisation = {}
        for modality, entry in norm.items():
            if modality not in MODALITIES:
                raise _fail(
                    f"{where}.normalisation", f"has unknown modality {modality!r} (ct, mr)", path
                )
            try:
                normalisation[modality] = Normalisation.from_dict(
                    _mapping(entry, f"{where}.normalisation.{modality}", path)
                )
            except (AmosegError, TypeError, ValueError, IndexError) as exc:
                reason = exc.what if isinstance(exc, AmosegError) else str(exc)
                raise _fail(
                    f"{where}.normalisation.{modality}", f"is invalid: {reason}", path
                ) from None
        network = _network(data.get("network"), f"{where}.network", path)
        crop = data.get("body_crop")
        if crop is not None:
            crop = _number(
                _mapping(crop, f"{where}.body_crop", path).get("threshold"),
                f"{where}.body_crop.threshold",
                path,
                positive=False,
            )
        previous = data.get("previous_stage")
        if previous is not None and (not isinstance(previous, str) or previous == name):
            raise _fail(
                f"{where}.previous_stage",
                f"must name another configuration, got {previous!r}",
                path,
            )
        keep = data.get("keep", "all")
        if keep not in KEEP_CHOICES:
            raise _fail(f"{where}.keep", f"must be organ or all, got {keep!r}", path)
        return cls(
            name=name,
            dims=int(dims),
            spacing=spacing,  # type: ignore[arg-type]
            resample_z=resample_z,
            size=size,
            patch_size=patch,
            batch_size=_integer(data.get("batch_size"), f"{where}.batch_size", path, 1, 4096),
            memory_budget_gb=_memory(data.get("memory_budget_gb", 8.0), where, path),
            normalisation=normalisation,
            network=network,
            body_crop=crop,
            context=_integer(data.get("context", 0), f"{where}.context", path, 0, 16),
            keep=keep,
            previous_stage=previous,
        )


@dataclass(frozen=True)
class Plan:
    configurations: dict[str, Configuration]
    median_spacing: tuple[float, float, float] | None = None
    dataset: str = ""
    fingerprint: dict[str, Any] = field(default_factory=dict)
    #: the device its networks were sized for ("gpu": nnU-Net's widths; "cpu": see the
    #: planner's CPU_UNET3D_ARGS); plans written before it existed were "gpu" plans
    train_on: str = "gpu"

    def configuration(self, name: str) -> Configuration:
        if name not in self.configurations:
            raise AmosegError(
                f"no configuration {name!r} in the plan",
                hint=f"choose one of {', '.join(self.configurations)}",
            )
        return self.configurations[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "dataset": self.dataset,
            "median_spacing": None if self.median_spacing is None else list(self.median_spacing),
            "configurations": {n: c.to_dict() for n, c in self.configurations.items()},
            "fingerprint": self.fingerprint,
            "train_on": self.train_on,
        }

    @classmethod
    def from_dict(cls, data: Any, path: Path | None = None) -> Plan:
        data = _mapping(data, "file", path)
        version = data.get("version", PLAN_VERSION)
        if version != PLAN_VERSION:
            raise _fail("version", f"must be {PLAN_VERSION}, got {version!r}", path)
        configs = _mapping(data.get("configurations"), "configurations", path)
        if not configs:
            raise _fail("configurations", "is empty", path)
        median = data.get("median_spacing")
        if median is not None:
            median = _spacing(median, "median_spacing", path)
        dataset = data.get("dataset", "")
        if not isinstance(dataset, str):
            raise _fail("dataset", f"must be a folder path (text), got {str(dataset)[:40]}", path)
        fingerprint = data.get("fingerprint") or {}
        _mapping(fingerprint, "fingerprint", path)
        parsed = {str(n): Configuration.from_dict(str(n), c, path) for n, c in configs.items()}
        for name, config in parsed.items():
            if config.previous_stage is not None and config.previous_stage not in parsed:
                raise _fail(
                    f"configurations.{name}.previous_stage",
                    f"names {config.previous_stage!r}, which the plan does not have",
                    path,
                )
        train_on = data.get("train_on", "gpu")
        if train_on not in TRAIN_ON:
            raise _fail("train_on", f"must be gpu or cpu, got {str(train_on)[:40]!r}", path)
        return cls(
            configurations=parsed,
            median_spacing=median,
            dataset=dataset,
            fingerprint=fingerprint,
            train_on=train_on,
        )


def load_plan(path: str | Path) -> Plan:
    """Read and validate plan.json (one line naming the field on any invalid edit)."""
    path = Path(path)
    if not path.is_file():
        raise AmosegError("plan file not found", path, "create one with `amoseg plan ROOT -o FILE`")
    return Plan.from_dict(read_json(path, "plan.json"), path)


def save_plan(plan: Plan, path: str | Path) -> Path:
    write_json(Path(path), plan.to_dict())
    return Path(path)
