"""`amoseg prepare`: turn an AMOS22 folder (or an nnU-Net v2 raw dataset) into the slice store
that training streams from."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare)


def prepare(
    amos_root: Path = typer.Argument(
        ...,
        help="AMOS22 folder (dataset.json, imagesTr, ...) or nnU-Net v2 raw dataset "
        "(imagesTr/<case>_0000.nii.gz, labelsTr, dataset.json).",
    ),
    out: Path = typer.Argument(..., help="Output slice store folder."),
    size: int = typer.Option(
        640, "--size", help="seed configuration: slices are resized to size×size."
    ),
    configuration: str = typer.Option(
        "seed",
        "--configuration",
        help="Plan configuration: seed (S×S slices), 2d (in-plane median spacing), 3d "
        "(3D median spacing), 3d_lowres (nnU-Net's low-resolution stage, when planned) or "
        "3d_cascade_fullres (3d plus the 3d_lowres prediction; needs --previous); planned on "
        "the fly unless --plan is given.",
    ),
    previous: Path | None = typer.Option(
        None,
        "--previous",
        help="3d_cascade_fullres: folder of the 3d_lowres store's fold runs (amoseg train "
        "unet3d --fold K --out PREV/fold_K, every fold). Each case's previous-stage input is "
        "predicted by the fold run that held it out; test cases by all folds.",
    ),
    device: str = typer.Option(
        "auto", "--device", help="With --previous: where the previous stage predicts."
    ),
    plan_file: Path | None = typer.Option(
        None, "--plan", help="plan.json from `amoseg plan` (its configurations are used)."
    ),
    split: str = typer.Option(
        "0.70,0.15,0.15", "--split", help="train,val,test fractions (by scan)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the train/val/test split."),
    keep: str = typer.Option(
        "organ",
        "--keep",
        help="seed: organ (only slices with an organ voxel) or all; 2d/3d keep every slice.",
    ),
    modality: str = typer.Option("all", "--modality", help="ct, mr or all."),
    workers: int = typer.Option(1, "--workers", help="Cases prepared in parallel."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip unreadable or inconsistent cases and list them at the end."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Rebuild a store that was made with other settings."
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    """Split AMOS scans by patient and store each preprocessed volume + labels.

    Examples: `amoseg prepare /data/amos22 store --size 640` (the report's S×S slices);
    `amoseg prepare /data/amos22 store-2d --configuration 2d` (planned on the fly), or
    `--plan plan.json --configuration 3d` with a plan from `amoseg plan`; a cascade:
    `--configuration 3d_cascade_fullres --previous PREV` (docs/training.md).
    """
    from rich.console import Console

    from amoseg.store.prepare import prepare_dataset, summary_table
    from amoseg.store.splits import parse_fractions

    if plan_file is not None:  # its networks name registered models, before any work
        from amoseg.models.registry import check_plan_networks
        from amoseg.planning.plan import load_plan

        check_plan_networks(load_plan(plan_file), plan_file)
    stage = None
    if previous is not None:  # checked (configuration, store, every fold) before any work
        from amoseg.inference.cascade import LowresFolds

        stage = LowresFolds(previous, device=device)
    summary = prepare_dataset(
        amos_root,
        out,
        size=size,
        configuration=configuration,
        plan=plan_file,
        split=parse_fractions(split),
        seed=seed,
        keep=keep,
        modality=modality,
        workers=workers,
        skip_bad=skip_bad,
        progress=not quiet,
        overwrite=overwrite,
        previous=stage,
    )
    console = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    for note in summary["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {note}", highlight=False, soft_wrap=True)
    console.print(summary_table(summary))
    background = {n: s["class_share"][0] for n, s in summary["splits"].items() if s["slices"]}
    if background:
        shares = ", ".join(f"{n} {100 * v:.1f} %" for n, v in background.items())
        console.print(f"background pixel share: {shares}", highlight=False)
    console.print(
        f"{summary['prepared_now']} case(s) prepared, {summary['reused']} already done, "
        f"{len(summary['skipped'])} skipped in {summary['seconds']:.1f} s → {out}",
        highlight=False,
    )
    if summary["skipped"]:
        err.print(f"[red]skipped {len(summary['skipped'])} case(s):[/red]")
        for entry in summary["skipped"]:
            err.print(f"  {entry['case_id']}: {entry['reason']}", highlight=False, soft_wrap=True)
