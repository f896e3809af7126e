"""`amoseg synth`: write a synthetic AMOS22-format CT dataset (the embedded default data)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def synth(
    out: Path = typer.Argument(..., help="Folder to write (AMOS22 layout); must be new or empty."),
    cases: int = typer.Option(30, "--cases", help="Number of scans to generate (1–499)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same data."),
    preset: str = typer.Option(
        "demo", "--preset", help="demo: 128–160² slices, fast; full: 512² at 0.6–0.9 mm."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing dataset folder at OUT."
    ),
) -> None:
    """Generate synthetic abdominal CT scans with all 15 AMOS organs labelled."""
    import sys
    import time

    from amoseg.atomic import read_json
    from amoseg.data.synth import generate_dataset

    start = time.perf_counter()
    root = generate_dataset(
        out, cases, seed, preset=preset, progress=sys.stderr.isatty(), overwrite=overwrite
    )
    meta = read_json(root / "dataset.json", "dataset.json")
    typer.echo(
        f"wrote {cases} synthetic CT cases ({preset}, seed {seed}) to {root}: "
        f"{meta['numTraining']} train / {meta['numValidation']} val / {meta['numTest']} test "
        f"in {time.perf_counter() - start:.1f} s"
    )
