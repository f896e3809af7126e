"""Option parsing shared by several commands (not a command itself: main.py skips `_` modules)."""

from __future__ import annotations

import json
from typing import Any

from typer.core import TyperCommand

from amoseg.errors import AmosegError


def parse_hparams(text: str | None) -> dict[str, Any]:
    """`--hparams '{"base": 16}'` → dict, with a one-line error for anything else."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AmosegError(
            f"--hparams is not valid JSON ({exc})", hint="e.g. --hparams '{\"base\": 16}'"
        ) from exc
    if not isinstance(value, dict):
        raise AmosegError("--hparams must be a JSON object", hint="e.g. '{\"base\": 16}'")
    return value


def checked_hparams(model: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """`hparams` checked against `model`'s own Params now (names, types, ranges), not in the
    middle of a run or of every tune trial."""
    from amoseg.models.registry import model_class

    model_class(model).check_params(hparams)
    return hparams


class ModelHelpCommand(TyperCommand):
    """A command whose MODEL argument's help lists the registered models, read from the
    registry only when the help is shown (the registry imports torch: seconds, which every
    other `amoseg` call should not pay)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from amoseg.models.registry import DEFAULT_MODEL, model_names

        for param in self.params:
            if param.name == "model":
                names = ", ".join(model_names())
                param.help = f"A registered model: {names} (default for predict: {DEFAULT_MODEL})."
        super().format_help(ctx, formatter)
