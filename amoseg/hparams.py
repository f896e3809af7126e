"""The value rules of amoseg's numeric settings, and the base of each recipe's checked
hyper-parameters (`Params`), in the core so that every layer checks the same way: `train
--hparams`, plan.json `network.args` and tune spaces all go through the recipe's own
`Params`. Each wrong value is one line naming it and what is accepted."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Self

from amoseg.errors import AmosegError


@dataclass(frozen=True)
class Rule:
    """What one numeric setting accepts: its type and closed range (`lo` open if `above`)."""

    kind: type  # int or float
    lo: float
    hi: float
    option: str = ""  # the CLI flag, for the error line
    above: bool = False  # lo itself is not allowed (lr > 0)

    def check(self, name: str, value: Any, label: str | None = None) -> int | float:
        label = label or self.option or name
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise AmosegError(f"{label} must be a number, got {value!r}", hint=self.describe())
        if self.kind is int and (isinstance(value, float) and not value.is_integer()):
            raise AmosegError(
                f"{label} must be a whole number, got {value!r}", hint=self.describe()
            )
        if not math.isfinite(value):
            raise AmosegError(f"{label} must be finite, got {value!r}", hint=self.describe())
        if value < self.lo or value > self.hi or (self.above and value == self.lo):
            raise AmosegError(f"{label} is out of range: {value!r}", hint=self.describe())
        return int(value) if self.kind is int else float(value)

    def describe(self) -> str:
        low = f"> {self.lo:g}" if self.above else f">= {self.lo:g}"
        return f"{'an integer' if self.kind is int else 'a number'} {low} and <= {self.hi:g}"


def number(default: float | None, kind: type, lo: float, hi: float, above: bool = False) -> Any:
    """A numeric parameter of a recipe's `Params`: its default and the rule it obeys (the
    rule is also what `tune` may search it within)."""
    return field(default=default, metadata={"check": Rule(kind, lo, hi, above=above)})


def flag(default: bool) -> Any:
    """A true/false parameter."""
    return field(default=default, metadata={"check": _check_flag})


def choice(default: str | None, options: tuple[str, ...]) -> Any:
    """A parameter naming one of `options` (or None: chosen from the store at training)."""
    return field(default=default, metadata={"check": _choice(options), "options": options})


def numbers(default: list[float] | None, integer: bool, allow_none: bool = False) -> Any:
    """A list of 1-64 numbers (hidden layer widths, class weights)."""
    check = _number_list(integer, allow_none)
    return field(default_factory=lambda: None if default is None else list(default),
                 metadata={"check": check})  # fmt: skip


def window(default: list[float] | None = None) -> Any:
    """An intensity window [low, high] (or the plan's CT [low, high, mean, std])."""
    return field(default_factory=lambda: None if default is None else list(default),
                 metadata={"check": _check_window})  # fmt: skip


def sizes(count: int) -> Any:
    """`count` voxel sizes (x, y[, z]) in 1..4096, or None (the plan's)."""
    return field(default=None, metadata={"check": _sizes(count)})


@dataclass(frozen=True)
class Params:
    """A recipe's checked hyper-parameters: each recipe declares a frozen dataclass of its
    own (fields made with `number`, `flag`, `choice`, ...), so `train --hparams`, plan.json
    `network.args` and tune spaces are checked against the recipe that will use them, one
    line per wrong value, before anything runs."""

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], recipe: str) -> Self:
        """The recipe's parameters with `values` over its defaults; unknown names, wrong types
        and values out of range are refused in one line naming the parameter."""
        if not isinstance(values, Mapping):
            raise AmosegError("hparams must be a JSON object", hint='e.g. {"base": 16}')
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            raise AmosegError(
                f"unknown hyper-parameter(s) {', '.join(unknown)} for model '{recipe}'",
                hint=f"accepted: {', '.join(sorted(known)) or 'none'}",
            )
        checked = {}
        for name, value in values.items():
            check = known[name].metadata.get("check")
            if value is None and _default(known[name]) is None:
                checked[name] = None  # "decide from the store / plan"
            elif isinstance(check, Rule):
                checked[name] = check.check(name, value, f"hparams {name}")
            elif check is not None:
                checked[name] = check(f"hparams {name}", value)
            else:
                checked[name] = value
        params = cls(**checked)
        params.validate()
        return params

    def validate(self) -> None:
        """Checks across fields (e.g. not every loss term weighted 0); none by default."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values, as config.json and checkpoints record them."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: _plain(_default(f)) for f in fields(cls)}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def numeric_rules(cls) -> dict[str, Rule]:
        """The numeric parameters and their rules: what a tune space may search."""
        return {f.name: f.metadata["check"] for f in fields(cls)
                if isinstance(f.metadata.get("check"), Rule)}  # fmt: skip


@dataclass(frozen=True)
class NoParams(Params):
    """A recipe without hyper-parameters (the position prior)."""


def check_loss_weights(lambda_dice: float, lambda_ce: float) -> None:
    if lambda_dice == 0 and lambda_ce == 0:
        raise AmosegError("hparams lambda_dice and lambda_ce cannot both be 0 (no loss)")


def check_json_object(hparams: Any) -> dict[str, Any]:
    """The shape every hparams value has before its recipe is known (`--hparams`, a
    settings file): an object with string keys. Names, types and ranges are the recipe's
    `Params.from_dict` check, run by `train` before it touches the run folder."""
    if not isinstance(hparams, dict) or not all(isinstance(k, str) for k in hparams):
        raise AmosegError("hparams must be a JSON object", hint='e.g. {"base": 16}')
    return dict(hparams)


def _default(f: Any) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _check_flag(label: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise AmosegError(f"{label} must be true or false, got {value!r}")
    return value


def _choice(options: tuple[str, ...]) -> Any:
    def check(label: str, value: Any) -> str:
        if value not in options:
            raise AmosegError(f"{label} must be one of {', '.join(options)}, got {value!r}")
        return str(value)

    return check


def _check_window(label: str, value: Any) -> list[float]:
    ok = (
        isinstance(value, list | tuple)
        and len(value) in (2, 4)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and value[0] < value[1]
    )
    if not ok:
        raise AmosegError(f"{label} must be [low, high] HU with low < high, got {value!r}")
    return [float(v) for v in value]


def _number_list(integer: bool, allow_none: bool) -> Any:
    rule = Rule(int, 1, 65_536) if integer else Rule(float, 0.0, 1e6)

    def check(label: str, value: Any) -> list[int | float] | None:
        if value is None and allow_none:
            return None
        items = value if isinstance(value, list | tuple) else None
        if not items or len(items) > 64:
            raise AmosegError(f"{label} must be a list of 1-64 numbers, got {value!r}")
        return [rule.check(label, item, f"{label} entry") for item in items]

    return check


def _sizes(count: int) -> Any:
    rule = Rule(int, 1, 4096)

    def check(label: str, value: Any) -> list[int]:
        if not isinstance(value, list | tuple) or len(value) != count:
            raise AmosegError(f"{label} must be {count} voxel sizes, got {value!r}")
        return [int(rule.check(label, v, f"{label} entry")) for v in value]

    return check
