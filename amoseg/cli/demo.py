"""`amoseg demo`: synth → prepare → train all models → evaluate → compare, on a CPU in minutes."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Demo folder."),
    cases: int = typer.Option(24, "--cases", min=6, help="Synthetic cases to generate."),
    size: int = typer.Option(64, "--size", min=16, help="Slice size of the prepared store."),
    epochs_scale: float = typer.Option(
        1.0, "--epochs-scale", min=0.01, help="Multiply every model's demo epochs by this."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    max_slices: int | None = typer.Option(
        None, "--max-slices", min=1, help="Cap training slices per epoch (quick smoke runs)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="Torch CPU threads (default: all if idle, 1 if busy)."
    ),
    fresh: bool = typer.Option(False, "--fresh", help="Delete OUT first instead of reusing it."),
    modality: str = typer.Option(
        "ct",
        "--modality",
        help="ct; mixed: CT + MR phantoms at AMOS's 500:100 ratio (runs the MR path too); mr.",
    ),
) -> None:
    """Run the model ladder end to end on synthetic data; finished stages are reused on re-run."""
    import sys

    from rich.console import Console

    from amoseg.reports.demo import DemoOptions, run_demo

    console = Console()
    options = DemoOptions(
        out=out,
        cases=cases,
        size=size,
        epochs_scale=epochs_scale,
        device=device,
        max_slices=max_slices,
        threads=threads,
        fresh=fresh,
        progress=sys.stderr.isatty(),
        modality=modality,
    )
    result = run_demo(options, log=lambda line: console.print(line, highlight=False, markup=False))
    table = result["markdown"].read_text(encoding="utf-8").split("\n\nAccuracy")[0]
    console.print(table, markup=False, soft_wrap=True)
    stages = ", ".join(
        f"{name} {t['seconds']:.0f} s{' (reused)' if t['reused'] else ''}"
        for name, t in result["timings"].items()
    )
    console.print(
        f"stages: {stages}\n"
        f"demo finished in {result['total_seconds']:.0f} s\n"
        f"report: {result['markdown']} (table), {result['csv']}, {result['chart']}\n"
        f"figures per model: {out / 'runs' / '<model>' / 'eval_test'}/"
        "{confusion_matrix,overlay}.png",
        highlight=False,
        markup=False,
    )
