"""The hyper-parameter search space: the report's defaults, overridable from a YAML/JSON file.

The space is plain data (a dict of specs) so it can be stored in the study's user attributes
and compared when another worker joins: two workers sampling different spaces into one study
would make its TPE model and its best trial meaningless.

File format (every key optional; a key left out keeps its default)::

    lr:           {low: 1.0e-5, high: 1.0e-2, log: true}   # or a number to fix it
    weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}
    batch_size:   [2, 4, 8, 16]                            # or {choices: [...]}, or a number

Any numeric hyper-parameter of the tuned recipe (its `Params`: e.g. `unet`'s base, depth,
lambda_dice) may be searched too, within the range the recipe allows (integers with
suggest_int)::

    base:         {low: 8, high: 32, log: true}            # or [8, 16, 32], or a number
    lambda_dice:  {low: 0.5, high: 2.0}

and the plan configuration's patch size of a planned store (`TrainSettings.patch_size`, the
plan's axis order: [x, y] for a `2d` store, [x, y, z] for a `3d` one), as a list of choices,
each checked by the rule `--patch-size` obeys (Optuna's categorical choices must be plain
values, so the space and the trials hold them as "128x128x64")::

    patch_size:   [[128, 128, 64], [160, 160, 48]]         # or {choices: [...]}, or one [x, y, z]
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
from pathlib import Path
from typing import Any

from amoseg.errors import AmosegError
from amoseg.hparams import Rule
from amoseg.models.registry import DEFAULT_MODEL, model_class
from amoseg.training.settings import check_patch_size, format_patch_size

FLOAT_PARAMS = ("lr", "weight_decay")
CHOICE_PARAMS = ("batch_size",)
PARAM_NAMES = (*FLOAT_PARAMS, *CHOICE_PARAMS)
#: plan configuration fields a space may search (choices only; not in the default space)
PLAN_PARAMS = ("patch_size",)

# The report's space: log-uniform learning rate and weight decay, batch size from a short list.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "weight_decay": {"type": "float", "low": 1e-6, "high": 1e-2, "log": True},
    "batch_size": {"type": "categorical", "choices": [2, 4, 8, 16]},
}

_FLOAT_KEYS = ("low", "high", "log")


def default_space() -> dict[str, dict[str, Any]]:
    return copy.deepcopy(DEFAULT_SPACE)


def load_space(path: str | Path | None, model: str = DEFAULT_MODEL) -> dict[str, dict[str, Any]]:
    """The default space with the entries of `path` (YAML or JSON) replacing the defaults;
    hyper-parameters are `model`'s own, checked by its rules."""
    rules = model_class(model).Params.numeric_rules()
    space = default_space()
    if path is None:
        return space
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise AmosegError("search-space file not found", path) from exc
    except OSError as exc:
        raise AmosegError(f"cannot read search-space file ({exc.strerror})", path) from exc
    raw = _parse(text, path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise AmosegError(
            "search-space file must be a mapping of parameter names",
            path,
            f"allowed keys: {', '.join(searchable(rules))}",
        )
    unknown = sorted(str(k) for k in raw if k not in searchable(rules))
    if unknown:
        raise AmosegError(
            f"unknown key(s) {', '.join(unknown)} in search-space file",
            path,
            f"allowed keys for {model}: {', '.join(searchable(rules))}",
        )
    for name, value in raw.items():
        if name in FLOAT_PARAMS:
            space[name] = _float_spec(name, value, path)
        elif name in CHOICE_PARAMS:
            space[name] = _choice_spec(value, path)
        elif name in PLAN_PARAMS:
            space[name] = _patch_spec(value, path)
        else:
            space[name] = _hparam_spec(name, value, path, rules[name])
    return space


def searchable(rules: dict[str, Rule]) -> tuple[str, ...]:
    """Every name a search-space file may hold: training settings, the plan configuration's,
    then the recipe's numeric hyper-parameters (`rules`)."""
    return (*PARAM_NAMES, *PLAN_PARAMS, *rules)


def names(space: dict[str, dict[str, Any]]) -> list[str]:
    """The space's parameters in canonical order (settings first, then hyper-parameters by
    name)."""
    fixed = (*PARAM_NAMES, *PLAN_PARAMS)
    return [n for n in fixed if n in space] + sorted(n for n in space if n not in fixed)


def hparams_of(params: dict[str, Any]) -> dict[str, Any]:
    """The model hyper-parameters among a trial's parameters."""
    return {k: v for k, v in params.items() if k not in (*PARAM_NAMES, *PLAN_PARAMS)}


def patch_size_of(params: dict[str, Any]) -> tuple[int, ...] | None:
    """A trial's patch size ("128x128x64" in the space) as `TrainSettings.patch_size`."""
    value = params.get("patch_size")
    return None if value is None else check_patch_size(value)


def patch_size_choices(space: dict[str, dict[str, Any]]) -> list[tuple[int, ...]]:
    """Every patch size the space may give a trial (none when it does not search one)."""
    spec = space.get("patch_size")
    if spec is None:
        return []
    values = [spec["value"]] if spec["type"] == "fixed" else spec["choices"]
    return [check_patch_size(v) for v in values]


def _patch_spec(value: Any, path: Path) -> dict[str, Any]:
    """patch_size: one [x, y(, z)] (fixed) or a list of them (choices), each checked by the
    `--patch-size` rule and stored as "XxYxZ"; all choices of one dimensionality."""

    def checked(v: Any) -> str:
        try:
            return format_patch_size(check_patch_size(v, label="search space patch_size"))
        except AmosegError as exc:
            raise AmosegError(exc.what, path, exc.hint) from exc

    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k != "choices")
        if unknown or "choices" not in value:
            raise AmosegError(
                "'patch_size' takes a list of choices (or {choices: [...]}) in search-space file",
                path,
                "e.g. patch_size: [[128, 128, 64], [160, 160, 48]]",
            )
        value = value["choices"]
    if isinstance(value, list) and value and all(isinstance(v, list | str) for v in value):
        choices = sorted({checked(v) for v in value})
        if len({c.count("x") for c in choices}) > 1:
            raise AmosegError("patch_size choices must all be 2D (XxY) or all 3D (XxYxZ)", path)
        return {"type": "categorical", "choices": choices}
    if isinstance(value, list) and not value:
        raise AmosegError("patch_size choices must not be empty", path)
    return {"type": "fixed", "value": checked(value)}


def _hparam_spec(name: str, value: Any, path: Path, rule: Rule) -> dict[str, Any]:
    """A hyper-parameter's spec, every bound checked against the setting's own rule."""

    def checked(where: str, v: Any) -> int | float:
        if isinstance(v, str):  # PyYAML reads `1e-5` (no dot) as a string
            with contextlib.suppress(ValueError):
                v = float(v)
        try:
            return rule.check(name, v, label=f"'{where}'")
        except AmosegError as exc:
            raise AmosegError(f"search space: {exc.what}", path, exc.hint) from exc

    if isinstance(value, list):
        if not value:
            raise AmosegError(f"'{name}' choices must not be empty", path)
        return {"type": "categorical", "choices": sorted({checked(name, v) for v in value})}
    if not isinstance(value, dict):
        return {"type": "fixed", "value": checked(name, value)}
    unknown = sorted(str(k) for k in value if k not in _FLOAT_KEYS)
    if unknown or "low" not in value or "high" not in value:
        raise AmosegError(
            f"'{name}' needs low and high (and optionally log) in search-space file", path
        )
    low, high = checked(f"{name}.low", value["low"]), checked(f"{name}.high", value["high"])
    log = value.get("log", False)
    if not isinstance(log, bool):
        raise AmosegError(f"'{name}.log' must be true or false, got {log!r}", path)
    if not low < high:
        raise AmosegError(f"'{name}': low ({low:g}) must be below high ({high:g})", path)
    if log and low <= 0:
        raise AmosegError(f"'{name}.low' must be > 0 for a log scale, got {low:g}", path)
    kind = "int" if rule.kind is int else "float"
    return {"type": kind, "low": low, "high": high, "log": log}


def _parse(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise AmosegError(f"search-space file is not valid JSON ({exc})", path) from exc
    import yaml  # JSON is also YAML, so any other extension goes through the YAML parser

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AmosegError(f"search-space file is not valid YAML ({first})", path) from exc


def _number(name: str, value: Any, path: Path) -> float:
    if isinstance(value, str):  # PyYAML reads `1e-5` (no dot) as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AmosegError(f"'{name}' must be a finite number, got {value!r}", path)
    return float(value)


def _float_spec(name: str, value: Any, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        fixed = _number(name, value, path)
        if fixed <= 0:
            raise AmosegError(f"'{name}' must be > 0, got {value!r}", path)
        return {"type": "fixed", "value": fixed}
    unknown = sorted(str(k) for k in value if k not in _FLOAT_KEYS)
    if unknown:
        raise AmosegError(
            f"unknown key(s) {', '.join(unknown)} under '{name}' in search-space file",
            path,
            f"allowed keys under '{name}': {', '.join(_FLOAT_KEYS)}",
        )
    default = DEFAULT_SPACE[name]
    low = _number(f"{name}.low", value.get("low", default["low"]), path)
    high = _number(f"{name}.high", value.get("high", default["high"]), path)
    log = value.get("log", default["log"])
    if not isinstance(log, bool):
        raise AmosegError(f"'{name}.log' must be true or false, got {log!r}", path)
    if not low < high:
        raise AmosegError(f"'{name}': low ({low:g}) must be below high ({high:g})", path)
    if low <= 0 and (log or name == "lr"):
        raise AmosegError(f"'{name}.low' must be > 0, got {low:g}", path)
    if low < 0:
        raise AmosegError(f"'{name}.low' must be >= 0, got {low:g}", path)
    return {"type": "float", "low": low, "high": high, "log": log}


def _choice_spec(value: Any, path: Path) -> dict[str, Any]:
    def _size(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise AmosegError(f"batch_size values must be positive integers, got {v!r}", path)
        return v

    if isinstance(value, dict):
        unknown = sorted(str(k) for k in value if k != "choices")
        if unknown:
            raise AmosegError(
                f"unknown key(s) {', '.join(unknown)} under 'batch_size' in search-space file",
                path,
                "allowed keys under 'batch_size': choices",
            )
        value = value.get("choices")
    if isinstance(value, list):
        if not value:
            raise AmosegError("batch_size choices must not be empty", path)
        choices = sorted({_size(v) for v in value})
        return {"type": "categorical", "choices": choices}
    return {"type": "fixed", "value": _size(value)}


def suggest(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sample one parameter set from an optuna trial (fixed entries are passed through)."""
    params: dict[str, Any] = {}
    for name in names(space):
        spec = space[name]
        if spec["type"] == "fixed":
            params[name] = spec["value"]
        elif spec["type"] == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec["log"])
        else:
            params[name] = trial.suggest_categorical(name, list(spec["choices"]))
    return params


def full_params(space: dict[str, dict[str, Any]], sampled: dict[str, Any]) -> dict[str, Any]:
    """A trial's sampled params completed with the space's fixed values, in canonical order."""
    out = {}
    for name in names(space):
        spec = space[name]
        out[name] = spec["value"] if spec["type"] == "fixed" else sampled[name]
    return out


def canonical(space: dict[str, dict[str, Any]]) -> str:
    """A stable text form of the space, to store in and compare against a study."""
    return json.dumps(space, sort_keys=True, separators=(",", ":"))


def describe(space: dict[str, dict[str, Any]]) -> str:
    """One line per parameter for the user ('lr: log-uniform 1e-05…0.01')."""
    parts = []
    for name in names(space):
        spec = space[name]
        if spec["type"] == "fixed":
            value = spec["value"]
            parts.append(
                f"{name}={value:g}" if isinstance(value, int | float) else f"{name}={value}"
            )
        elif spec["type"] == "int":
            scale = "log-int" if spec["log"] else "int"
            parts.append(f"{name} {scale} {spec['low']}…{spec['high']}")
        elif spec["type"] == "float":
            kind = "log-uniform" if spec["log"] else "uniform"
            parts.append(f"{name} {kind} {spec['low']:g}…{spec['high']:g}")
        else:
            parts.append(f"{name} in {{{', '.join(str(c) for c in spec['choices'])}}}")
    return "; ".join(parts)
