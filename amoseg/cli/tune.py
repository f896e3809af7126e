"""`amoseg tune`: Optuna search of learning rate, weight decay and batch size, and of any
numeric model hyper-parameter or the plan's patch size a `--space` file names.

Start the same command on several processes or machines with one --storage and --study and
they share the study (see docs/tuning.md).
"""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    from amoseg.cli._options import ModelHelpCommand

    app.command("tune", cls=ModelHelpCommand)(tune)


def tune(
    model: str = typer.Argument(..., help="A registered model (listed by --help)."),
    data: Path = typer.Option(..., "--data", help="Prepared slice store (`amoseg prepare`)."),
    trials: int = typer.Option(20, "--trials", help="Finished trials the study should reach."),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Study storage URL shared by all workers: sqlite:///path.db (one machine) or "
        "postgresql://user@host:5432/db (several). Default: sqlite file OUT/study.db.",
    ),
    study: str | None = typer.Option(
        None, "--study", help="Study name shared by all workers (default: amoseg-MODEL)."
    ),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs per trial."),
    trial_minutes: float | None = typer.Option(
        None,
        "--trial-minutes",
        help="Train each trial for this many minutes (train --time-budget) instead of --epochs.",
    ),
    timeout: float | None = typer.Option(
        None, "--timeout", help="Seconds after which this worker starts no new trial."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output folder (default: runs/tune-MODEL); trials go to OUT/trials."
    ),
    metric: str = typer.Option("miou", "--metric", help="miou or dice (mean organ Dice)."),
    space: Path | None = typer.Option(
        None, "--space", help="YAML/JSON file overriding the search space (docs/tuning.md)."
    ),
    pruner: str = typer.Option("median", "--pruner", help="median, hyperband or none."),
    seed: int | None = typer.Option(
        None, "--seed", help="Sampler and training seed (give each worker its own)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    max_slices: int | None = typer.Option(
        None, "--max-slices", min=1, help="Random training slices per epoch (short budgets)."
    ),
    hparams: str | None = typer.Option(
        None, "--hparams", help="Fixed model hyper-parameters as JSON, e.g. '{\"base\": 16}'."
    ),
    heartbeat: int = typer.Option(
        30,
        "--heartbeat",
        help="Seconds between liveness beats; a trial silent for 3 beats is marked failed.",
    ),
) -> None:
    """Maximise validation mIoU (or Dice) over lr, weight decay and batch size (and what a
    --space file adds: hyper-parameters, patch_size); write OUT/best_params.json for
    `amoseg train --params`."""

    import torch
    from rich.console import Console

    from amoseg.cli._options import checked_hparams, parse_hparams
    from amoseg.tuning import (
        TuneConfig,
        best_params,
        load_space,
        plot_history,
        run_study,
        trials_table,
        write_best_params,
    )
    from amoseg.tuning.objective import training_objective
    from amoseg.tuning.search_space import describe, patch_size_choices

    console = Console(highlight=False, soft_wrap=True)
    hp = checked_hparams(model, parse_hparams(hparams))
    out = out if out is not None else Path("runs") / f"tune-{model}"
    config = TuneConfig(
        model=model,
        out=out,
        trials=trials,
        storage=storage,
        study_name=study,
        epochs=epochs,
        metric=metric.lower(),
        space=load_space(space, model),
        pruner=pruner.lower(),
        seed=seed,
        timeout_s=timeout,
        heartbeat_s=heartbeat,
        hparams=hp,
    )
    config.validate()
    trial_fn = training_objective(
        model,
        data,
        epochs=epochs,
        metric=config.metric,
        device=device,
        seed=seed or 0,
        hparams=hp,
        max_slices_per_epoch=max_slices,
        patch_sizes=patch_size_choices(config.space),
        time_budget=trial_minutes,
    )
    console.print(
        f"tuning [bold]{model}[/bold] in study '{config.name}' "
        f"({config.trials} trials, "
        + (f"{trial_minutes:g} min" if trial_minutes else f"{epochs} epochs")
        + f" each, maximising val {config.metric}, "
        f"pruner {config.pruner}); space: {describe(config.space)}"
    )
    oom = (MemoryError, torch.cuda.OutOfMemoryError)
    result = run_study(config, trial_fn, catch=oom, log=console.print)

    best = best_params(result, config.space, config.metric)
    best_path = write_best_params(config.out, best)
    png = plot_history(result, Path(config.out) / "optimization_history.png", config.metric)
    console.print(trials_table(result, config.metric))
    console.print(
        f"best trial {best['trial']}: {config.metric}={best['value']:.4f} with "
        f"lr={best['lr']:.3g}, weight_decay={best['weight_decay']:.3g}, "
        f"batch_size={best['batch_size']}\nwrote {best_path} and {png}\n"
        f"next: amoseg train {model} --data {data} --out RUNDIR --params {best_path}"
    )
