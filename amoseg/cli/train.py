"""`amoseg train MODEL --data PREPARED --out RUNDIR`: thin shell over amoseg.training.train.

Also the DDP entry: `torchrun --nproc_per_node N -m amoseg train ...` runs this same command
in N processes; amoseg.training picks the process group up from torchrun's environment.
"""

from __future__ import annotations

from pathlib import Path

import typer

from amoseg.errors import AmosegError
from amoseg.training.settings import PATCH_SIZE_HELP

#: keys of a tune best.json that map onto TrainSettings fields.
PARAM_KEYS = ("lr", "weight_decay", "batch_size", "patch_size")


def register(app: typer.Typer) -> None:
    from amoseg.cli._options import ModelHelpCommand

    app.command("train", cls=ModelHelpCommand)(train)


def _params_file(path: Path) -> dict:
    from amoseg.atomic import read_json

    params = read_json(path, "params file")
    if not isinstance(params, dict):
        raise AmosegError(
            "params file must hold a JSON object",
            path,
            'e.g. {"lr": 1e-3, "weight_decay": 1e-4, "batch_size": 8}',
        )
    return params


def parse_fold(text: str | None) -> int | str | None:
    """'3' → 3, 'all' → 'all', None → None; anything else is a user error."""
    from amoseg.store.splits import ALL_FOLDS

    if text is None or text == ALL_FOLDS:
        return text
    if not text.isdigit():
        raise AmosegError(f"unknown --fold {text!r}", hint=f"use 0..4 or {ALL_FOLDS}")
    return int(text)


def train(
    model: str = typer.Argument(..., help="A registered model (listed by --help)."),
    data: Path = typer.Option(..., "--data", help="Prepared slice store (amoseg prepare)."),
    out: Path = typer.Option(..., "--out", help="Run folder to write (checkpoints, logs)."),
    epochs: int | None = typer.Option(
        None, "--epochs", min=1, help="Epochs to train (in total). Default 10."
    ),
    time_budget: float | None = typer.Option(
        None,
        "--time-budget",
        help="Train for MINUTES instead of --epochs: the first epoch measures the epoch time, "
        "and the LR schedule is re-planned each epoch to reach its floor when the budget ends "
        "(the run ends within one epoch of it).",
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Default: the model recipe's."
    ),
    lr: float | None = typer.Option(None, "--lr", help="Default: the model recipe's."),
    weight_decay: float | None = typer.Option(
        None, "--weight-decay", help="Default: the model recipe's."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option(
        "auto",
        "--precision",
        help="auto, bf16 or fp32. auto: bf16 autocast + channels_last for the recipes that "
        "train in bf16 (unet, unet3d) on a GPU or a CPU with AMX / AVX512-BF16, else fp32.",
    ),
    params: Path | None = typer.Option(
        None,
        "--params",
        help="best_params.json from `amoseg tune` (lr, weight_decay, batch_size, patch_size, "
        "hparams); explicit flags win.",
    ),
    context: int | None = typer.Option(
        None, "--context", min=0, help="unet only: adjacent slices per side (2.5D)."
    ),
    hparams: str | None = typer.Option(
        None, "--hparams", help="Model hyper-parameters as JSON, e.g. '{\"base\": 16}'."
    ),
    workers: int = typer.Option(2, "--workers", min=0, help="DataLoader worker processes."),
    max_slices: int | None = typer.Option(
        None, "--max-slices", min=1, help="Random slices per epoch (short budgets)."
    ),
    val_cases: int | None = typer.Option(
        None, "--val-cases", min=1, help="Validate each epoch on the first N val cases only."
    ),
    validation: str = typer.Option(
        "auto",
        "--validation",
        help="Per-epoch validation: patches (nnU-Net's pseudo-Dice on validation patches, "
        "then `evaluate` on the val split at the end), volumes (whole val volumes every "
        "epoch), or auto (patches on a planned store, volumes on a seed store).",
    ),
    val_patches: int | None = typer.Option(
        None, "--val-patches", help="Validation samples per epoch (default: 10 % of an epoch)."
    ),
    val_native_every: float | None = typer.Option(
        None,
        "--val-native-every",
        help="With patch validation: also score the val scans on their own grids every "
        "MINUTES of training (RUNDIR/val_native.csv).",
    ),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    patch_size: str | None = typer.Option(None, "--patch-size", help=PATCH_SIZE_HELP),
    seed: int = typer.Option(0, "--seed", help="Random seed (initialisation, order, aug)."),
    fold: str | None = typer.Option(
        None,
        "--fold",
        help="Cross-validation fold of the store's splits.json: 0..4, or all (every non-test "
        "case). Default: the store's train/val split.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from checkpoint_latest.pt."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Start over in a run folder that holds a run (deletes it)."
    ),
) -> None:
    """Train a model on a prepared store; validates every epoch, keeps latest + best, and
    draws RUNDIR/progress.png as it trains."""
    import os

    from amoseg.cli._options import checked_hparams, parse_hparams
    from amoseg.training import TrainSettings
    from amoseg.training import train as run_train
    from amoseg.training.settings import parse_patch_size

    values = {"lr": lr, "weight_decay": weight_decay, "batch_size": batch_size}
    values["patch_size"] = None if patch_size is None else parse_patch_size(patch_size)
    hp: dict = {}
    if params is not None:
        loaded = _params_file(params)
        for key in PARAM_KEYS:
            if values[key] is None and loaded.get(key) is not None:
                values[key] = loaded[key]
        hp.update(loaded.get("hparams") or {})
    hp.update(parse_hparams(hparams))
    if context is not None:
        hp["context"] = context
    checked_hparams(model, hp)
    if values["batch_size"] is not None:
        values["batch_size"] = int(values["batch_size"])
    if time_budget is not None and epochs is not None:
        raise AmosegError(
            "--epochs and --time-budget both set how long to train", hint="give one of them"
        )
    settings = TrainSettings(
        fold=parse_fold(fold),
        epochs=10 if epochs is None else epochs,
        time_budget=time_budget,
        validation=validation,
        val_patches=val_patches,
        val_native_minutes=val_native_every,
        device=device,
        precision=precision,
        seed=seed,
        num_workers=workers,
        max_slices_per_epoch=max_slices,
        val_cases=val_cases,
        hparams=hp,
        compile=compile,
        progress=os.environ.get("RANK", "0") == "0",
        **values,
    )
    from amoseg.reports.evaluate import ValidationScorer

    summary = run_train(
        model, data, out, settings, resume=resume, overwrite=overwrite, scorer=ValidationScorer()
    )
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(
            f"{model}: epoch {summary['epoch']}, train loss {summary['train_loss']:.4f}, "
            f"val mIoU {summary['val_miou']:.4f} (best {summary['best_val_miou']:.4f} at epoch "
            f"{summary['best_epoch']}), {summary['n_params']:,} parameters, "
            f"{summary['train_seconds']:.1f} s → {out}"
        )
