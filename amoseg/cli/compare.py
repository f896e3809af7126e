"""`amoseg compare`: the report's comparison table from evaluated runs."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)


def compare(
    run_dirs: list[Path] = typer.Argument(
        ...,
        help="Evaluated run folders, nnU-Net v2 model folders (evaluated with `amoseg "
        "evaluate MODEL_DIR`) or the -o folders of evaluated ensembles and packages.",
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for comparison.{md,csv,png}."),
    split: str = typer.Option("test", "--split", help="Which eval_<split> to read."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier comparison in OUT."
    ),
) -> None:
    """Write comparison.md, comparison.csv and a bar chart (native Dice and NSD per model, or
    mIoU and Dice when no run was scored on the scans' own grids). Organs a model does not
    cover (an nnU-Net model's classes mapped onto AMOS) show as not covered, never as 0."""
    from rich.console import Console

    from amoseg.outputs import check_new_outputs
    from amoseg.reports.compare import compare_runs

    names = ("comparison.md", "comparison.csv", "comparison.png")
    check_new_outputs([out / n for n in names], overwrite=overwrite)
    result = compare_runs(run_dirs, out, split=split)
    console = Console(soft_wrap=True)
    console.print(result["markdown"].read_text(encoding="utf-8").split("\n\nAccuracy")[0])
    console.print(
        f"wrote {result['markdown']}, {result['csv']}, {result['chart']}", highlight=False
    )
