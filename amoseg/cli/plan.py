"""`amoseg plan`: fingerprint a dataset and write plan.json (target spacings, patch and batch
sizes, normalisation, networks) for `amoseg prepare --plan`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("plan")(plan)


def plan(
    amos_root: Path = typer.Argument(
        ..., help="AMOS22-layout folder (dataset.json, imagesTr, ...)."
    ),
    output: Path = typer.Option(Path("plan.json"), "-o", "--output", help="plan.json to write."),
    size: int = typer.Option(640, "--size", help="S of the `seed` configuration (S×S slices)."),
    memory_gb: float = typer.Option(
        8.0, "--memory-gb", help="GPU memory budget (GiB) the batch and patch sizes fit."
    ),
    modality: str = typer.Option("all", "--modality", help="ct, mr or all: cases to plan from."),
    lowres_spacing: str | None = typer.Option(
        None,
        "--lowres-spacing",
        metavar="MM",
        help="Plan 3d_lowres (and the cascade) at this spacing instead of nnU-Net's rule: one "
        "value (isotropic) or XxYxZ mm, e.g. 6 or 3x3x3 (TotalSegmentator's fast models); "
        "its patch is planned for it.",
    ),
    train_on: str = typer.Option(
        "auto",
        "--train-on",
        help="The device the networks are sized for: gpu (nnU-Net's widths, batches fitted "
        "to --memory-gb), cpu (3D networks at half width, batch 2: several times the "
        "optimiser steps per minute on a CPU), or auto (gpu when a CUDA device is visible "
        "here). Written into plan.json.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing plan file."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Fingerprint every labelled case and write plan.json (configurations seed, 2d, 3d, and
    3d_lowres + 3d_cascade_fullres when nnU-Net's rule plans a low-resolution stage).

    Example: amoseg plan /data/amos22 -o plan.json && amoseg prepare /data/amos22 store-2d
    --plan plan.json --configuration 2d
    """
    from rich.console import Console

    from amoseg.errors import AmosegError
    from amoseg.planning import make_plan, resolve_train_on, save_plan

    parse_spacing(lowres_spacing)  # a typo fails before minutes of fingerprinting
    device = resolve_train_on(train_on)
    if output.exists() and not overwrite:
        raise AmosegError("plan file exists", output, "pass --overwrite to replace it")
    import warnings

    with warnings.catch_warnings(record=True) as caught:  # e.g. find_cases' modality note
        warnings.simplefilter("always")
        result = make_plan(
            amos_root,
            size=size,
            memory_gb=memory_gb,
            modality=modality,
            progress=not quiet,
            lowres=parse_spacing(lowres_spacing),
            train_on=device,
        )
    for note in caught:
        typer.echo(f"warning: {' '.join(str(note.message).split())}", err=True)
    save_plan(result, output)
    console = Console(soft_wrap=True)
    for name, config in result.configurations.items():
        spacing = (
            "S×S resize"
            if config.spacing is None
            else " × ".join(f"{s:.3g}" for s in config.spacing)
            + " mm"
            + ("" if config.resample_z else " (z kept)")
        )
        after = "" if config.previous_stage is None else f", after {config.previous_stage}"
        console.print(
            f"{name:>4}: {config.dims}D, {spacing}, patch {'×'.join(map(str, config.patch_size))}, "
            f"batch {config.batch_size}, {config.network.name}"
            f"{_width(config.network.args)}{after}",
            highlight=False,
        )
    why = {"auto": " (no CUDA device here)" if device == "cpu" else " (a CUDA device is here)"}
    other = "cpu" if device == "gpu" else "gpu"
    console.print(
        f"networks sized for training on {device}{why.get(train_on, '')}; "
        f"--train-on {other} plans for {other}",
        highlight=False,
    )
    console.print(f"plan → {output}", highlight=False)


def _width(args: dict) -> str:
    return f" base {args['base']}" if "base" in args else ""


def parse_spacing(text: str | None) -> tuple[float, float, float] | None:
    """'6' → (6, 6, 6); '3x3x5' (or commas) → (3, 3, 5); None stays None."""
    from amoseg.errors import AmosegError

    if text is None:
        return None
    parts = text.replace(",", "x").lower().split("x")
    try:
        values = tuple(float(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise AmosegError(f"--lowres-spacing takes MM or XxYxZ mm (e.g. 6 or 3x3x5), got {text!r}")
    return values  # type: ignore[return-value]
