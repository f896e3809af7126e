"""How a run trains (`TrainSettings`) and what the model is (`hparams`), validated as data.

Every caller (the CLI, `tune`, the demo, Python code) builds a `TrainSettings`; building one
checks each value against `TRAIN_RULES`, so a wrong value (`--lr -1`, `nan`) is one line
naming the option, at the edge, before any data is read. `hparams` is checked against the
recipe's own `Params` (`{"base": 0}`, an unknown name) by `train` before it touches the run
folder. The same rules tell `tune` which fields it may search and within which bounds.

`patch_size` overrides the plan configuration of a planned store (its patch size, in the
plan's axis order): a run's settings are the training settings plus that override.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from amoseg.errors import AmosegError
from amoseg.hparams import Rule, check_json_object

#: the numeric training settings (TrainSettings fields).
TRAIN_RULES: dict[str, Rule] = {
    "epochs": Rule(int, 1, 100_000, "--epochs"),
    "batch_size": Rule(int, 1, 65_536, "--batch-size"),
    "lr": Rule(float, 0.0, 10.0, "--lr", above=True),
    "weight_decay": Rule(float, 0.0, 10.0, "--weight-decay"),
    "seed": Rule(int, 0, 2**32 - 1, "--seed"),
    "num_workers": Rule(int, 0, 256, "--workers"),
    "max_slices_per_epoch": Rule(int, 1, 10**9, "--max-slices"),
    "val_cases": Rule(int, 1, 10**6, "--val-cases"),
    "val_batch_size": Rule(int, 1, 65_536),
    "val_patches": Rule(int, 1, 10**6, "--val-patches"),
    "val_native_minutes": Rule(float, 0.0, 10**6, "--val-native-every", above=True),
    "time_budget": Rule(float, 0.0, 10**6, "--time-budget", above=True),
}


PATCH_SIZE_HELP = (
    "Patch size of a planned store's configuration (2d: XxY, 3d: XxYxZ voxels, e.g. "
    "128x128x64; commas work too). Default: the plan's."
)


def parse_patch_size(text: str, label: str = "--patch-size") -> tuple[int, ...]:
    """'128x128x64' or '128,128,64' → (128, 128, 64), checked by `check_patch_size`."""
    parts = [p.strip() for p in str(text).lower().replace(",", "x").split("x")]
    try:
        values = [int(p) for p in parts]
        if len(values) not in (2, 3):
            raise ValueError
    except ValueError:
        raise AmosegError(
            f"{label} must be 2 or 3 whole numbers joined by x or commas, got {text!r}",
            hint="e.g. 128x128x64 (3d) or 256x256 (2d)",
        ) from None
    return check_patch_size(values, label)


def check_patch_size(value: Any, label: str = "--patch-size") -> tuple[int, ...]:
    """A plan configuration's patch size: (x, y) or (x, y, z) voxels within the plan's limits
    (the rule plan.json's own patch_size obeys)."""
    from amoseg.planning.plan import MAX_SIZE

    if isinstance(value, str):
        return parse_patch_size(value, label)
    if not isinstance(value, list | tuple) or len(value) not in (2, 3):
        raise AmosegError(
            f"{label} must be 2 or 3 sizes (XxY or XxYxZ), got {value!r}",
            hint="e.g. 128x128x64 (3d) or 256x256 (2d)",
        )
    rule = Rule(int, 1, MAX_SIZE, label)
    return tuple(int(rule.check("patch_size", v)) for v in value)


def format_patch_size(patch: tuple[int, ...] | list[int]) -> str:
    """(128, 128, 64) → '128x128x64', the form `--patch-size` and tune's choices use."""
    return "x".join(str(int(n)) for n in patch)


#: settings that may change when a run is resumed (they do not change the maths; precision
#: depends on the machine a run resumes on).
RESUMABLE_OVERRIDES = ("epochs", "device", "num_workers", "compile", "progress", "val_batch_size",
                       "precision", "val_native_minutes", "val_native_end")  # fmt: skip
#: `train --precision`: auto (bf16 where the recipe and the device suit it), bf16, fp32
PRECISIONS = ("auto", "bf16", "fp32")
#: `train --validation`: per-epoch validation on patches (pseudo-Dice), on whole volumes, or
#: auto (patches on a planned store, volumes on a seed store)
VALIDATIONS = ("auto", "patches", "volumes")


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
    #: validate each epoch on the first N validation cases only (None: all). On a CPU one pass
    #: over full-size validation scans can cost more than an epoch; evaluate still scores all.
    val_cases: int | None = None
    #: cross-validation fold of the store's splits.json (0..4, "all"); None: its train/val
    fold: int | str | None = None
    #: a planned store's patch size instead of its plan's ((x, y) or (x, y, z)); None: the plan's
    patch_size: tuple[int, ...] | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    compile: bool = False
    val_batch_size: int = 16
    progress: bool = True
    #: bf16 autocast + channels_last ("bf16"), fp32, or "auto" (`TorchModel.set_precision`)
    precision: str = "auto"
    #: per-epoch validation: "patches", "volumes" or "auto" (`amoseg.training.validation`)
    validation: str = "auto"
    #: validation samples per epoch with patch validation; None: 10 % of the epoch's samples
    val_patches: int | None = None
    #: patch validation: also score on the val scans' own grids every N minutes of training
    val_native_minutes: float | None = None
    #: patch validation: `evaluate` the best checkpoint on the val split when training ends
    val_native_end: bool = True
    #: train for this many minutes (epochs then follow from the measured epoch time and the
    #: LR schedule is planned to end at its floor when the budget does); None: `epochs`
    time_budget: float | None = None

    def __post_init__(self) -> None:
        """Validated on construction: no invalid TrainSettings exists anywhere."""
        for name, rule in TRAIN_RULES.items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, rule.check(name, value))
        if self.patch_size is not None:
            self.patch_size = check_patch_size(self.patch_size)
        self.hparams = check_json_object(self.hparams)
        if self.precision not in PRECISIONS:
            raise AmosegError(
                f"--precision must be auto, bf16 or fp32, got {self.precision!r}",
                hint="auto: bf16 on a GPU or a CPU with AMX / AVX512-BF16, else fp32",
            )
        if self.validation not in VALIDATIONS:
            raise AmosegError(
                f"--validation must be auto, patches or volumes, got {self.validation!r}",
                hint="patches: pseudo-Dice on validation patches each epoch (cheap)",
            )
        if not isinstance(self.device, str) or not self.device:
            raise AmosegError(f"--device must be auto, cpu or cuda, got {self.device!r}")

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
