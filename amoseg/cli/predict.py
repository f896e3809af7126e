"""`amoseg predict`: segment new CT/MR scans (NIfTI files, folders, DICOM series) with a run."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)


def predict(
    paths: list[Path] = typer.Argument(
        ...,
        help="Models, then scans. Models: run folders of `amoseg train`, folders of runs "
        "(e.g. all folds) or *.amoseg.zip packages; several are ensembled (probabilities "
        "averaged on each scan's grid). Scans: .nii/.nii.gz/.nrrd/.mha/.mhd files, folders "
        "of them, DICOM series folders (nested PACS exports too) or DICOM .zip files.",
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
        "averaged, only along the axes each model was trained to be mirror-invariant to "
        "(3D recipes: 8× the compute; 2D recipes train without flips and are never "
        "mirrored). Default: on for CUDA, off on CPU.",
    ),
    overlay: bool = typer.Option(False, "--overlay", help="Also write a PNG montage."),
    output_format: str = typer.Option(
        "nifti",
        "--format",
        help="nifti (<name>_seg.nii.gz), dicom-seg (<name>_seg.dcm, DICOM series inputs "
        "only; opens in 3D Slicer, OHIF, PACS) or both (the NIfTI for every scan, the "
        "DICOM-SEG where the input allows).",
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
    resume: bool = typer.Option(
        False,
        "--continue",
        help="Resume a batch: skip scans whose outputs in OUT are complete (every file, "
        "and a volumes JSON that parses); redo the others.",
    ),
    series: str | None = typer.Option(
        None,
        "--series",
        help="SeriesInstanceUID of the DICOM series to segment where an input (a nested "
        "export, a .zip) holds several. Default: the only series, or the only CT series.",
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads torch uses (default: torch's, one per core)."
    ),
    step_size: float = typer.Option(
        0.5,
        "--step-size",
        min=0.01,
        max=1.0,
        help="Sliding-window tile step as a share of the tile, for nnU-Net model folders "
        "(nnU-Net's 0.5; TotalSegmentator uses 0.8 for speed). amoseg's own runs ignore it.",
    ),
    previous_stage: Path | None = typer.Option(
        None,
        "--previous-stage",
        metavar="DIR",
        help="For an nnU-Net 3d_cascade_fullres model folder: its 3d_lowres model folder, "
        "where it is not beside it (nnU-Net's layout, found without this option).",
    ),
) -> None:
    """Write <name>_seg.nii.gz (uint8 AMOS ids, the input's exact geometry) and
    <name>_volumes.csv/.json (organ volumes in mL, mean HU) per scan into OUT.

    Folders are searched for scans, leaving out label maps (*_seg.nii.gz); existing outputs
    are refused unless --overwrite; repeated names get _2, _3, ... ; nnU-Net's channel
    suffix is dropped (case_0000.nii.gz → case_seg.nii.gz). A batch of several scans also
    gets OUT/volumes.csv: one row per scan and organ."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from amoseg.errors import AmosegError
    from amoseg.inference import batch
    from amoseg.inference.ensemble import split_models
    from amoseg.inference.outputs import OutputSettings
    from amoseg.inference.predict import SYNTHETIC_NOTE, collect_inputs, predict_many
    from amoseg.inference.segmenter import Segmenter, SegmentOptions
    from amoseg.interrupts import listing, note_finished
    from amoseg.labels import CLASS_NAMES
    from amoseg.nnunet_models.names import covered_by
    from amoseg.outputs import claim_output_folder
    from amoseg.progress import StageColumn

    options = SegmentOptions(
        device=device, precision=precision, crop=crop, tta=tta, postprocess=postprocess,
        batch_size=batch_size, backend=backend, onnx_path=onnx,  # type: ignore[arg-type]
        step_size=step_size, previous_stage=previous_stage,
    )  # fmt: skip
    options.check()  # a bad option fails before any model is loaded
    batch.set_threads(threads)
    models, inputs = split_models(paths)
    outputs = OutputSettings(output_format, html, model_name=models[0].name)
    items, failures = collect_inputs(list(inputs), series)
    if len(inputs) == 1 and len(items) == 1:
        first = items[0]
        outputs.check_input(first.path, first.kind, first.series)  # before the model loads
    console = Console(stderr=False, soft_wrap=True)  # a path is one line, never wrapped
    if len(inputs) == 1 and failures:
        raise failures[0][1]
    if not items and not failures:
        raise AmosegError("no scans found in the inputs", inputs[0])
    if output_format == "both" and items and all(i.kind != "dicom" for i in items):
        raise AmosegError(
            "--format both: no input is a DICOM series, so no DICOM-SEG can be written",
            items[0].path,
            "use --format nifti for NIfTI, NRRD and MetaImage scans",
        )
    claim_output_folder(out)  # one predict per folder while it runs, checked before writing
    batch_csv = batch.check_batch_csv(items, out, overwrite=overwrite, resume=resume)
    todo, skipped = (items, [])
    if resume:
        todo, skipped = batch.split_done(items, out, overlay=overlay, outputs=outputs)
    batch.check_resumable(
        todo, out, overlay=overlay, outputs=outputs, overwrite=overwrite, resume=resume
    )
    for item in skipped:
        typer.echo(f"complete, skipped: {item.name} ({item.path})")
    if not todo:
        _finish_batch(batch, items, out, batch_csv, failures, 0)
        return
    segmenter = Segmenter.open(models, options)
    if tta and segmenter.mirrored_bundles < len(segmenter.bundles):
        plain = sorted(
            {b.recipe for b, m in zip(segmenter.bundles, segmenter.mirrored, strict=True) if not m}
        )
        typer.echo(
            f"note: --tta does not mirror {', '.join(plain)}: trained without flips, mirroring "
            "would average in wrong-side organs",
            err=True,
        )
    if segmenter.synthetic:
        typer.echo(SYNTHETIC_NOTE, err=True)
    covered = covered_by(segmenter.backends)  # nnU-Net models may not predict every organ
    if covered is not None:
        missing = [CLASS_NAMES[i] for i in range(1, 16) if i not in covered]
        typer.echo(f"note: not covered by the model (no volumes): {', '.join(missing)}", err=True)
    written: list[str] = []
    note_finished(f"predict wrote 0 of {len(todo)} scans")

    with Progress(
        TextColumn("[bold]predict"),
        BarColumn(),
        MofNCompleteColumn(),
        StageColumn(),
        console=console,
        disable=not console.is_terminal,
    ) as progress:
        task = progress.add_task("", total=len(todo))

        def stage(item, name: str, calls: int) -> None:
            if progress.tasks[task].fields.get("scan") != item.name:
                progress.update(task, scan=item.name, started=time.perf_counter())
            progress.update(task, stage=f"{name} ({calls})" if calls else name)

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
                    f"predict wrote {len(written)} of {len(todo)} scans to {out}: "
                    + listing(written)
                )
            progress.advance(task)

        results, scan_failures = predict_many(
            segmenter.backends, todo, out,
            batch_size=batch_size, postprocess=segmenter.postprocess,
            overlay=overlay, outputs=outputs, overwrite=True,  # checked above
            on_done=done, on_stage=stage,
        )  # fmt: skip
    failures += scan_failures
    if len(inputs) == 1 and len(items) == 1 and failures:
        raise failures[0][1]
    _finish_batch(batch, items, out, batch_csv, failures, len(results))


def _finish_batch(batch, items, out: Path, batch_csv: Path | None, failures, segmented: int):
    """Write the batch's volumes.csv (the scans with results, skipped ones included), then
    report the inputs that failed."""
    from amoseg.errors import AmosegError

    if batch_csv is not None:
        n = batch.write_batch_csv(items, out, batch_csv)
        typer.echo(f"{batch_csv}  ({n} scans)")
    total = len(items) + len([f for f in failures if f[0] not in {i.path for i in items}])
    if failures:
        typer.echo(f"{len(failures)} input(s) failed:", err=True)
        for _path, exc in failures:
            typer.echo(f"  error: {exc.line()}", err=True)
        raise AmosegError(
            f"{len(failures)} of {total} inputs failed, {segmented} scan(s) segmented",
            out,
            "see the list above",
        )
