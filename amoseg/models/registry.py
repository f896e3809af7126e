"""Models by name: the report's ladder from the position prior to the modern U-Net.

The registry is generated from the classes: a model module in this package marks its class
with `@register_model` (the class's `name` is its key), and `model_names()` imports every
module of the package once to collect them. Adding a model is a new module plus that one
decorator; the CLI help, the demo and the tests read the names from here.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, TypeVar

from amoseg.errors import AmosegError

DEFAULT_MODEL = "unet"

_REGISTRY: dict[str, type] = {}
_discovered = False
M = TypeVar("M", bound=type)


def register_model(cls: M) -> M:
    """Class decorator: make `cls` available under `cls.name` (train, evaluate, demo...)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__qualname__} needs a `name` to be registered")
    if _REGISTRY.get(name, cls) is not cls:
        raise TypeError(f"model name '{name}' is taken by {_REGISTRY[name].__qualname__}")
    _REGISTRY[name] = cls
    return cls


def _discover() -> None:
    """Import every module of amoseg.models once, so their decorators run."""
    global _discovered
    if _discovered:
        return
    package = Path(__file__).parent
    for info in pkgutil.iter_modules([str(package)]):
        importlib.import_module(f"amoseg.models.{info.name}")
    _discovered = True


def model_names() -> tuple[str, ...]:
    """Every registered model name, simplest first (each class's `ladder` rank, then name)."""
    _discover()
    return tuple(sorted(_REGISTRY, key=lambda n: (getattr(_REGISTRY[n], "ladder", 99), n)))


def ladder_names() -> tuple[str, ...]:
    """The report's ladder of slice models (prior … unet): what the demo trains and compares.
    Recipes outside it (`in_ladder` False, e.g. unet3d) are registered but not in the demo."""
    return tuple(n for n in model_names() if getattr(_REGISTRY[n], "in_ladder", True))


def model_class(name: str) -> type:
    """The class registered under `name`."""
    _discover()
    if name not in _REGISTRY:
        raise AmosegError(
            f"unknown model '{name}'", hint=f"choose one of {', '.join(model_names())}"
        )
    return _REGISTRY[name]


def check_plan_networks(plan: Any, path: Path | None = None) -> None:
    """Every configuration's `network.class` names a registered model and its `network.args`
    are that recipe's parameters, in range (plan.json is checked field by field in
    `amoseg.planning.plan`; the recipes live here, a layer above)."""
    names = model_names()
    for config in plan.configurations.values():
        if config.network.name not in names:
            raise AmosegError(
                f"plan configurations.{config.name}.network.class must name a model "
                f"({', '.join(names)}), got {config.network.name!r}",
                path,
                "fix that field, or re-create it with `amoseg plan`",
            )
        try:
            model_class(config.network.name).configured_params(config)
        except AmosegError as exc:
            raise AmosegError(
                f"plan configurations.{config.name}.network.args is invalid: {exc.what}",
                path,
                exc.hint or "fix that field, or re-create it with `amoseg plan`",
            ) from None


def create_model(name: str, **hparams: Any) -> Any:
    """A fresh, untrained model; `input_size` (the store's S) may be passed among hparams."""
    return model_class(name)(**hparams)


def train_defaults(name: str) -> dict[str, Any]:
    """The recipe's own lr / weight_decay / batch_size (used where settings leave None)."""
    return dict(model_class(name).TRAIN_DEFAULTS)


def load_model(path: str | Path, device: str = "auto") -> Any:
    """Rebuild whichever model a checkpoint file holds."""
    from amoseg.models.checkpoint import load_checkpoint, rebuild_model

    ckpt = load_checkpoint(Path(path))
    return rebuild_model(ckpt, device, Path(path))


def __getattr__(name: str) -> Any:
    if name == "MODEL_NAMES":  # the old constant, now generated: every registered model
        return model_names()
    if name == "LADDER":
        return ladder_names()
    raise AttributeError(f"module 'amoseg.models.registry' has no attribute {name!r}")
