"""How a run trains (as opposed to what the model is: that lives in `hparams`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: settings that may change when a run is resumed (they do not change the maths).
RESUMABLE_OVERRIDES = ("epochs", "device", "num_workers", "compile", "progress", "val_batch_size")


@dataclass
class TrainSettings:
    """Training settings. lr / weight_decay / batch_size left at None take the model recipe's
    own defaults (e.g. `unet-seed`: the report's 7.891e-05 / 1.572e-03 / 2), so a caller that
    does not tune gets each recipe as designed."""

    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    device: str = "auto"
    seed: int = 0
    num_workers: int = 0
    max_slices_per_epoch: int | None = None
    #: cross-validation fold of the store's splits.json (0..4, "all"); None: its train/val
    fold: int | str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    compile: bool = False
    val_batch_size: int = 16
    progress: bool = True

    def resolved(self, defaults: dict[str, Any]) -> TrainSettings:
        """A copy with None fields filled from the recipe's defaults."""
        filled = {k: v for k, v in defaults.items() if getattr(self, k, None) is None}
        return dataclasses.replace(self, **filled)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("hparams")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], hparams: dict[str, Any] | None = None) -> TrainSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names}, hparams=dict(hparams or {}))
