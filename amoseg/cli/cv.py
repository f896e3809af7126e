"""`amoseg cv RUN_ROOT`: cross-validation summary and post-processing choice of fold runs."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("cv")(cv)


def cv(
    run_root: Path = typer.Argument(
        ..., help="Folder of fold runs (amoseg train MODEL --fold K --out RUN_ROOT/fold_K)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Slices per pass."),
    tolerance: float = typer.Option(2.0, "--tolerance", help="NSD tolerance in mm."),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Replace a summary or postprocessing.json that was edited since cv wrote it.",
    ),
) -> None:
    """Score each fold's validation scans on their own grid (Dice, NSD), choose per organ
    whether keeping the largest connected component helps, and write RUN_ROOT/cv/
    (cv_summary.md/.csv, cv_dice.png, cv.json) and postprocessing.json with the runs."""
    from amoseg.reports.cv import cross_validate

    result = cross_validate(
        run_root, device=device, batch_size=batch_size, tolerance_mm=tolerance, overwrite=overwrite
    )
    mean, sd = result["summary"][-2], result["summary"][-1]
    organs = result["postprocessing"]["lcc_organs"]
    typer.echo(
        f"{len(result['folds'])} folds: validation Dice {100 * mean['dice']:.2f} ± "
        f"{100 * sd['dice']:.2f} %, NSD {100 * mean['nsd']:.2f} ± {100 * sd['nsd']:.2f} %; "
        f"largest-component clean-up for {len(organs)} organ(s) {organs} → {run_root / 'cv'}"
    )
