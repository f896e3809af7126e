"""`amoseg score`: score any tool's NIfTI label maps against ground truth (files or folders)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("score")(score)


def score(
    pred: Path = typer.Argument(..., help="Prediction label map (.nii/.nii.gz) or a folder."),
    gt: Path = typer.Argument(..., help="Ground-truth label map or a folder (matched by name)."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full report as JSON."),
    csv_out: Path | None = typer.Option(None, "--csv", help="Write one row per case per class."),
    tolerance: float = typer.Option(
        2.0, "--tolerance", min=0.0, help="NSD tolerance in mm (default 2 mm)."
    ),
    subset: bool = typer.Option(
        False, "--subset", help="Score only the predicted cases when GT has more files."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing --json/--csv files (never an input)."
    ),
) -> None:
    """Per-organ IoU, Dice, NSD and HD95 plus accuracy and mIoU from one confusion matrix.

    Folders are matched by file name; a prediction may carry a _seg suffix
    (amos_0001_seg.nii.gz ↔ amos_0001.nii.gz). Both maps must share shape and affine.
    """
    from rich.console import Console

    from amoseg.metrics.score import (
        match_cases,
        score_pairs,
        write_report_csv,
        write_report_json,
    )
    from amoseg.outputs import check_new_outputs, input_files

    check_new_outputs(
        [p for p in (json_out, csv_out) if p is not None],
        overwrite=overwrite,
        inputs=input_files(pred, gt),
    )
    pairs = match_cases(pred, gt, subset=subset)
    from amoseg.progress import progress_bar

    with progress_bar("score", transient=True) as bar:
        task = bar.add_task("cases", total=len(pairs))
        report = score_pairs(
            pairs, tolerance, on_case=lambda case: bar.update(task, advance=1, description=case)
        )
    if json_out is not None:
        write_report_json(report, json_out)
    if csv_out is not None:
        write_report_csv(report, csv_out)
    console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    for note in report["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {note}", highlight=False, soft_wrap=True)
    console.print(_table(report))
    for path in (json_out, csv_out):
        if path is not None:
            console.print(f"wrote {path}", highlight=False)


def _table(report: dict):
    from rich.table import Table

    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.2f}"

    def mm(x: float | None) -> str:
        return "—" if x is None else f"{x:.2f}"

    n = report["n_cases"]
    table = Table(
        title=f"{n} case{'s' if n != 1 else ''}; NSD at {report['tolerance_mm']:g} mm",
        caption=(
            f"accuracy {pct(report['accuracy'])} %  ·  mIoU (16 classes) {pct(report['miou'])} %"
            f"  ·  mIoU (15 organs) {pct(report['miou_organs'])} %"
            "\nIoU/Dice: one matrix over all voxels; case Dice/NSD/HD95: mean over cases "
            "where present (HD95 over finite values)"
        ),
    )
    for name, justify in (
        ("class", "left"),
        ("IoU %", "right"),
        ("Dice %", "right"),
        ("case Dice %", "right"),
        ("NSD %", "right"),
        ("HD95 mm", "right"),
        ("cases", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=name == "class")
    for row in report["per_class"]:
        if row["absent"]:
            table.add_row(row["name"], "absent", "", "", "", "", "0", style="dim")
            continue
        hd = mm(row.get("hd95_mm"))
        if row.get("n_hd95_infinite"):
            hd += f" (+{row['n_hd95_infinite']} inf)"
        table.add_row(
            row["name"],
            pct(row["iou"]),
            pct(row["dice"]),
            pct(row.get("case_dice")),
            pct(row.get("nsd")),
            hd if row["id"] else "—",
            str(row["n_cases"]),
        )
    table.add_section()
    table.add_row(
        "[bold]mean (organs)[/bold]",
        pct(report["miou_organs"]),
        pct(report["mean_dice"]),
        pct(report["mean_case_dice"]),
        pct(report["mean_nsd"]),
        mm(report["mean_hd95_mm"]),
        str(n),
    )
    return table
