"""The value rules of amoseg's numeric settings and model hyper-parameters, in the core so
that every layer checks the same way: `train --hparams`, plan.json `network.args`, tune
spaces. Each wrong value is one line naming it and what is accepted."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

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


#: the numeric model hyper-parameters, whichever model has them (see each model's HPARAMS).
HPARAM_RULES: dict[str, Rule] = {
    "base": Rule(int, 1, 1024, "hparams base"),
    "depth": Rule(int, 1, 10, "hparams depth"),
    "context": Rule(int, 0, 16, "hparams context"),
    "work_size": Rule(int, 1, 4096, "hparams work_size"),
    "lambda_dice": Rule(float, 0.0, 1000.0, "hparams lambda_dice"),
    "lambda_ce": Rule(float, 0.0, 1000.0, "hparams lambda_ce"),
    "warmup": Rule(float, 0.0, 1.0, "hparams warmup"),
}
_BOOL_HPARAMS = ("augment", "body_crop")


def check_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """Types and ranges of the known hyper-parameters (which ones a model accepts is the
    model's own check); returns them with numbers as their declared type."""
    if not isinstance(hparams, dict):
        raise AmosegError("hparams must be a JSON object", hint='e.g. {"base": 16}')
    out = dict(hparams)
    for name, value in hparams.items():
        if name in HPARAM_RULES:
            out[name] = HPARAM_RULES[name].check(name, value)
        elif name in _BOOL_HPARAMS and not isinstance(value, bool):
            raise AmosegError(f"hparams {name} must be true or false, got {value!r}")
        elif name == "window" and value is not None:
            _check_window(value)
        elif name in ("hidden", "class_weights") and value is not None:
            _check_number_list(name, value, integer=name == "hidden")
    if out.get("lambda_dice") == 0 and out.get("lambda_ce") == 0:
        raise AmosegError("hparams lambda_dice and lambda_ce cannot both be 0 (no loss)")
    return out


def _check_window(value: Any) -> None:
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
        and value[0] < value[1]
    )
    if not ok:
        raise AmosegError(f"hparams window must be [low, high] HU with low < high, got {value!r}")


def _check_number_list(name: str, value: Any, integer: bool) -> None:
    items = value if isinstance(value, list | tuple) else None
    if not items or len(items) > 64:
        raise AmosegError(f"hparams {name} must be a list of 1-64 numbers, got {value!r}")
    rule = Rule(int, 1, 65_536) if integer else Rule(float, 0.0, 1e6)
    for item in items:
        rule.check(f"hparams {name} entry", item)
