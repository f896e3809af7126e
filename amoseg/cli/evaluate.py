"""`amoseg evaluate`: score a trained run on a split of a prepared store."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)


def evaluate(
    models: list[Path] = typer.Argument(
        ...,
        help="Run folder written by `amoseg train`; several runs, folders of fold runs or "
        "packages are evaluated as one ensemble (as `amoseg predict` takes them; native "
        "grid only).",
        metavar="RUN...",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Prepared store (default: the one the run was trained on)."
    ),
    split: str = typer.Option("test", "--split", help="train, val or test."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Slices per forward pass."),
    native: bool = typer.Option(
        True,
        "--native/--no-native",
        help="Also segment each scan's original file on its own grid (as `amoseg predict` "
        "does) and score 3D Dice and NSD per organ against its original label (as `amoseg "
        "score` does).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier evaluation of this split."
    ),
    out_dir: Path | None = typer.Option(
        None, "-o", "--out", help="Ensembles: output folder (default RUN/eval_ensemble_SPLIT)."
    ),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Test-time mirroring along the axes each model trained invariant to (as predict: "
        "on for CUDA, off on CPU by default).",
    ),
) -> None:
    """Write RUNDIR/eval_SPLIT/metrics.json, a confusion-matrix PNG and an overlay figure.

    Reports AMOS-style per-organ 3D Dice and NSD on each scan's original grid (`native`),
    and the report's table (pixel accuracy, mIoU, Dice) over the stored slices."""
    from rich.console import Console

    from amoseg.errors import AmosegError
    from amoseg.inference.ensemble import member_runs
    from amoseg.inference.package import is_package
    from amoseg.nnunet_models import is_nnunet_model_dir
    from amoseg.outputs import check_new_outputs
    from amoseg.reports.evaluate import eval_dir, evaluate_ensemble, evaluate_run

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f} %"

    run_dir = models[0]
    packages = [m for m in models if is_package(m)]
    # an nnU-Net model folder is scored as a (one-member) ensemble, on native grids
    nnunet = is_nnunet_model_dir(run_dir)
    if len(models) > 1 or len(member_runs(run_dir)) > 1 or packages or nnunet:
        if out_dir is None and is_package(run_dir):
            raise AmosegError(
                "a model package cannot hold its evaluation (it is a zip file)",
                run_dir,
                "pass -o FOLDER for the evaluation",
            )
        target = out_dir or run_dir / f"eval_ensemble_{split}"
        check_new_outputs(
            [target / "metrics.json"], overwrite=overwrite, hint="pass --overwrite or -o DIR"
        )
        e = evaluate_ensemble(
            models, data, target, split=split, device=device, batch_size=batch_size, tta=tta
        )
        nat = e["native"]
        typer.echo(
            f"ensemble of {e['members']} on {split} ({nat['n_cases']} scans, native grid): "
            f"mean organ Dice {pct(nat['mean_dice'])}, NSD {pct(nat['mean_nsd'])} → "
            f"{target / 'metrics.json'}"
        )
        return
    check_new_outputs(
        [eval_dir(run_dir, split) / "metrics.json"],
        overwrite=overwrite,
        hint="pass --overwrite to evaluate again",
    )
    m = evaluate_run(
        run_dir, data, split=split, device=device, batch_size=batch_size, native=native, tta=tta
    )

    out = eval_dir(run_dir, split)
    nat = m.get("native")
    if nat:
        native_line = (
            f"native grid ({nat['n_cases']} scans, all slices): mean organ Dice "
            f"{pct(nat['mean_dice'])}, NSD@{nat['tolerance_mm']:g} mm {pct(nat['mean_nsd'])}"
        )
    else:
        native_line = f"native grid: skipped ({m.get('native_skipped')})"
    Console(soft_wrap=True).print(
        f"[bold]{m['model']}[/bold] on {split}\n  {native_line}\n"
        f"  report-style, stored slices ({m['n_cases']} volumes, {m['n_slices']} slices): "
        f"accuracy {pct(m['accuracy'])}, mIoU {pct(m['miou'])}, "
        f"mean organ Dice {pct(m['mean_dice'])}, {m['slices_per_s'] or 0:.1f} slices/s\n"
        f"wrote {out / 'metrics.json'}, {out / 'confusion_matrix.png'}, {out / 'overlay.png'}",
        highlight=False,
    )
