"""`amoseg predict`: segment new CT/MR scans (NIfTI files, folders, DICOM series) with a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    paths: list[Path] = typer.Argument(
        ...,
        help="Models, then scans. Models: run folders of `amoseg train`, folders of runs "
        "(e.g. all folds) or *.amoseg.zip packages; several are ensembled (probabilities "
        "averaged on each scan's grid). Scans: NIfTI files (.nii/.nii.gz), folders of them, "
        "or DICOM series folders.",
        metavar="RUN... SCAN...",
    ),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Slices per forward pass (default 8 CPU, 32 GPU)."
    ),
    postprocess: str = typer.Option(
        "auto",
        help="auto (the organs `amoseg cv` chose from the validation folds, saved with the "
        "runs; none without a saved choice), none, or lcc: keep every organ's largest 3D "
        "connected component.",
    ),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Test-time mirroring (paired left/right organs swapped), probabilities "
        "averaged: 4× (2D) or 8× (3D) the compute. Default: on for CUDA, off on CPU.",
    ),
    overlay: bool = typer.Option(False, "--overlay", help="Also write a PNG montage."),
    output_format: str = typer.Option(
        "nifti",
        "--format",
        help="nifti (<name>_seg.nii.gz), dicom-seg (<name>_seg.dcm, DICOM series inputs "
        "only; opens in 3D Slicer, OHIF, PACS) or both.",
    ),
    html: bool = typer.Option(
        False, "--html", help="Also write <name>_viewer.html: a self-contained offline viewer."
    ),
    backend: str = typer.Option(
        "torch", help="torch, or onnx (ONNX Runtime; exports RUNDIR/model.onnx if needed)."
    ),
    onnx: Path | None = typer.Option(
        None, "--onnx", help="With --backend onnx: this ONNX file instead of RUNDIR/model.onnx."
    ),
    precision: str = typer.Option(
        "auto",
        help="auto (bf16 for bf16-trained models where the CPU/GPU has native bf16), "
        "fp32 or bf16. Torch backend only.",
    ),
    crop: bool = typer.Option(
        True,
        "--crop/--no-crop",
        help="Score only the body's box where the run was trained on such crops (CT `unet`).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing outputs in OUT (input files never are)."
    ),
    step_size: float = typer.Option(
        0.5,
        "--step-size",
        min=0.01,
        max=1.0,
        help="Sliding-window tile step as a share of the tile, for nnU-Net model folders "
        "(nnU-Net's 0.5; TotalSegmentator uses 0.8 for speed). amoseg's own runs ignore it.",
    ),
) -> None:
    """Write <name>_seg.nii.gz (uint8 AMOS ids, the input's exact geometry) and
    <name>_volumes.csv/.json (organ volumes in mL, mean HU) per scan into OUT.

    Folders are searched for scans, leaving out label maps (*_seg.nii.gz); existing outputs
    are refused unless --overwrite; repeated names get _2, _3, ... ."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from amoseg.errors import AmosegError
    from amoseg.inference.backends import PRECISIONS, resolve_device
    from amoseg.inference.ensemble import open_members, split_models
    from amoseg.inference.outputs import OutputSettings
    from amoseg.inference.postprocess import saved_lcc_organs
    from amoseg.inference.predict import (
        SYNTHETIC_NOTE,
        check_outputs,
        collect_inputs,
        open_backend,
        predict_many,
        trained_on_synthetic,
    )
    from amoseg.inference.tta import MirroredBackend
    from amoseg.interrupts import listing, note_finished
    from amoseg.labels import CLASS_NAMES
    from amoseg.nnunet_models.names import covered_by

    if postprocess not in {"auto", "none", "lcc"}:
        raise AmosegError(f"unknown --postprocess {postprocess!r}", None, "use auto, none or lcc")
    if backend not in {"torch", "onnx"}:
        raise AmosegError(f"unknown --backend {backend!r}", None, "use torch or onnx")
    if precision not in PRECISIONS:
        raise AmosegError(f"unknown --precision {precision!r}", None, "use auto, fp32 or bf16")
    dev = resolve_device(device)  # a bad --device fails before any model is loaded
    models, inputs = split_models(paths)
    mirror = dev.type == "cuda" if tta is None else tta
    outputs = OutputSettings(output_format, html, model_name=models[0].name)
    items, failures = collect_inputs(list(inputs))
    if len(inputs) == 1 and len(items) == 1:
        outputs.check_input(items[0].path, items[0].kind)  # before the model is loaded
    console = Console(stderr=False, soft_wrap=True)  # a path is one line, never wrapped
    if len(inputs) == 1 and failures:
        raise failures[0][1]
    if not items and not failures:
        raise AmosegError("no scans found in the inputs", inputs[0])
    check_outputs(items, out, overlay=overlay, outputs=outputs, overwrite=overwrite)
    scorer: Any
    if backend == "onnx":
        if len(models) != 1:
            raise AmosegError("--backend onnx predicts with one run", models[1], "pass one run")
        scorer = open_backend(
            models[0], backend="onnx", device=device, onnx_path=onnx, precision=precision,
            crop=crop,
        )  # fmt: skip
        scorer, runs = (MirroredBackend(scorer) if mirror else scorer), models
    else:
        scorer, runs = open_members(
            models, device=device, precision=precision, crop=crop, tta=mirror,
            step_size=step_size,
        )  # fmt: skip
    chosen: Any = postprocess
    if postprocess == "auto":
        organs = saved_lcc_organs(runs) if runs else None
        chosen = organs or "none"
    # runs: the run folders (fold roots expanded); models: packages carry their own card
    if any(trained_on_synthetic(path) for path in [*runs, *models]):
        typer.echo(SYNTHETIC_NOTE, err=True)
    covered = covered_by(scorer)  # issue 26: nnU-Net models may not predict every AMOS organ
    if covered is not None:
        missing = [CLASS_NAMES[i] for i in range(1, 16) if i not in covered]
        typer.echo(f"note: not covered by the model (no volumes): {', '.join(missing)}", err=True)
    written: list[str] = []
    note_finished(f"predict wrote 0 of {len(items)} scans")

    with Progress(
        TextColumn("[bold]predict"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("", total=len(items))

        def done(item, outcome) -> None:
            if isinstance(outcome, AmosegError):
                progress.console.print(f"[red]failed[/red] {escape(str(item.path))}")
            else:
                for note in outcome.notes:
                    typer.echo(f"warning: {note}", err=True)
                progress.console.print(f"{outcome.seg_path}  {outcome.seconds:.1f} s", markup=False)
                for path in outcome.extra.values():
                    if path != outcome.seg_path:
                        progress.console.print(f"{path}", markup=False)
                written.append(outcome.seg_path.name)
                note_finished(
                    f"predict wrote {len(written)} of {len(items)} scans to {out}: "
                    + listing(written)
                )
            progress.advance(task)

        results, scan_failures = predict_many(
            scorer, items, out,
            batch_size=batch_size, postprocess=chosen,
            overlay=overlay, outputs=outputs, overwrite=overwrite, on_done=done,
        )  # fmt: skip
    total = len(items) + len(failures)  # scans found + inputs that could not be expanded
    failures += scan_failures
    if len(inputs) == 1 and len(items) == 1 and failures:
        raise failures[0][1]
    if failures:
        typer.echo(f"{len(failures)} input(s) failed:", err=True)
        for _path, exc in failures:
            typer.echo(f"  error: {exc.line()}", err=True)
        raise AmosegError(
            f"{len(failures)} of {total} inputs failed, {len(results)} scan(s) segmented",
            out,
            "see the list above",
        )
