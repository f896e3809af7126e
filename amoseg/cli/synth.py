"""`amoseg synth`: write a synthetic AMOS22-format CT/MR dataset (the embedded default data)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def synth(
    out: Path = typer.Argument(..., help="Folder to write (AMOS22 layout); must be new or empty."),
    cases: int = typer.Option(30, "--cases", help="Number of scans to generate (1–499 for CT)."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same data."),
    preset: str = typer.Option(
        "demo", "--preset", help="demo: small matrices, fast; full: real-scan matrices (CT 512²)."
    ),
    modality: str = typer.Option(
        "ct",
        "--modality",
        help="ct, mr (ids ≥ 500: T1 in/opposed phase, T1 fat-sat portal, T2 HASTE), or mixed "
        "(AMOS's 500:100 CT:MR ratio).",
    ),
    hard: bool = typer.Option(
        False,
        "--hard",
        help="Harder scans: partial coverage, arms in the field, metal streaks, liver/kidney "
        "lesions (labelled as the organ), dose-dependent correlated noise.",
    ),
    randomise_intensity: bool = typer.Option(
        False,
        "--randomise-intensity",
        help="SynthSeg-style: every tissue's intensity drawn at random per scan, plus random "
        "blur and resolution loss (for models that must not rely on HU).",
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Processes; any number gives the same files as one."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing dataset folder at OUT."
    ),
) -> None:
    """Generate synthetic abdominal CT/MR scans with all 15 AMOS organs labelled."""
    import sys
    import time

    from amoseg.atomic import read_json
    from amoseg.data.synth import generate_dataset

    start = time.perf_counter()
    root = generate_dataset(
        out,
        cases,
        seed,
        preset=preset,
        progress=sys.stderr.isatty(),
        overwrite=overwrite,
        modality=modality,
        hard=hard,
        randomise=randomise_intensity,
        workers=workers,
    )
    meta = read_json(root / "dataset.json", "dataset.json")
    kinds = [info["modality"] for info in meta["amoseg_synth"]["cases"].values()]
    counts = " + ".join(f"{kinds.count(k)} {k.upper()}" for k in ("ct", "mr") if k in kinds)
    extras = "".join(
        f", {name}" for name, on in (("hard", hard), ("randomised", randomise_intensity)) if on
    )
    typer.echo(
        f"wrote {cases} synthetic cases ({counts}; {preset}{extras}, seed {seed}) to {root}: "
        f"{meta['numTraining']} train / {meta['numValidation']} val / {meta['numTest']} test "
        f"in {time.perf_counter() - start:.1f} s"
    )
