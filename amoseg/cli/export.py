"""`amoseg export`: a trained run's network as an ONNX file, or runs (or nnU-Net v2 model
folders) as a model package."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    run_dirs: list[Path] = typer.Argument(
        ...,
        help="Run folder written by `amoseg train` (with --package: one or more, e.g. the "
        "folds of an ensemble, or nnU-Net v2 model folders; with --onnx also a .amoseg.zip "
        "package).",
    ),
    onnx: Path | None = typer.Option(None, "--onnx", help="ONNX file to write (opset 17)."),
    package: Path | None = typer.Option(
        None,
        "--package",
        help="Model package to write (FILE.amoseg.zip): inference weights, configuration, "
        "labels and a model card; `amoseg predict FILE.amoseg.zip ...` uses it directly.",
    ),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Compare ONNX Runtime with PyTorch on a test batch."
    ),
    licence: str | None = typer.Option(
        None, "--licence", help="With --package: the weights' licence, for the model card."
    ),
    citation: str | None = typer.Option(
        None, "--citation", help="With --package: how to cite the model, for the model card."
    ),
    folds: str | None = typer.Option(
        None,
        "--folds",
        help="With --package and an nnU-Net model folder: the folds to carry, e.g. 0,1 "
        "(default: every fold the folder predicts with).",
    ),
    previous_stage: Path | None = typer.Option(
        None,
        "--previous-stage",
        metavar="DIR",
        help="With --package and an nnU-Net 3d_cascade_fullres folder: its 3d_lowres model "
        "folder, where it is not beside it (packed under previous/).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing ONNX file or package."
    ),
) -> None:
    """Export the run's best model: as ONNX (raw slices (batch, 1+2c, H, W) or 3D patches
    (batch, 1, Z, X, Y) → logits; the run's configuration in the metadata, so predicting
    with ONNX Runtime preprocesses as the run does), or as one shareable .amoseg.zip
    package (an nnU-Net model folder too: its dataset.json, plans.json and fold checkpoints,
    with a card naming the source model and its licence)."""
    from amoseg.errors import AmosegError

    if (onnx is None) == (package is None):
        raise AmosegError("pass exactly one of --onnx FILE or --package FILE.amoseg.zip")
    chosen = None if folds is None else [f.strip() for f in folds.split(",") if f.strip()]
    if package is not None:
        _export_package(run_dirs, package, overwrite, licence, citation, chosen, previous_stage)
        return
    if chosen is not None or previous_stage is not None:
        flag = "--folds" if chosen is not None else "--previous-stage"
        raise AmosegError(f"{flag} goes with --package", None, f"drop {flag}")
    if len(run_dirs) != 1:
        raise AmosegError("--onnx exports one run", run_dirs[1], "pass a single run folder")
    _export_onnx(run_dirs[0], onnx, check, overwrite)  # type: ignore[arg-type]


def _export_package(
    run_dirs: list[Path],
    package: Path,
    overwrite: bool,
    licence: str | None,
    citation: str | None,
    folds: list[str] | None,
    previous_stage: Path | None = None,
) -> None:
    from amoseg.inference.package import export_package
    from amoseg.outputs import check_new_outputs, input_files

    check_new_outputs([package], overwrite=overwrite, inputs=input_files(*run_dirs))
    card = export_package(
        run_dirs, package, licence=licence, citation=citation, folds=folds,
        previous_stage=previous_stage,
    )  # fmt: skip
    size_mb = package.stat().st_size / 2**20
    synthetic = " (trained on synthetic data)" if card["training_data"].get("synthetic") else ""
    typer.echo(
        f"wrote {package} ({size_mb:.1f} MB, model {card['model']}, "
        f"{card['members']} member(s){synthetic})"
    )
    if card.get("kind") == "nnunet":
        origin = f" (stated by {card['licence_from']})" if card.get("licence_from") else ""
        typer.echo(f"licence: {card['licence']}{origin}")
        if card["not_covered"]:
            typer.echo(f"AMOS organs not covered: {', '.join(card['not_covered'])}")


def _export_onnx(run_dir: Path, onnx: Path, check: bool, overwrite: bool) -> None:
    from amoseg.errors import AmosegError
    from amoseg.inference.bundle import read_bundles
    from amoseg.inference.export import (
        example_shape,
        export_bundle,
        exports_crops,
        parity_check,
    )
    from amoseg.outputs import check_new_outputs, input_files

    check_new_outputs([onnx], overwrite=overwrite, inputs=input_files(run_dir))
    bundles = read_bundles(run_dir)
    if any(not hasattr(b, "model") for b in bundles):  # an nnU-Net model folder or member
        raise AmosegError(
            "ONNX export of an nnU-Net model is not supported",
            run_dir,
            "export it as a package instead: --package m.amoseg.zip",
        )
    if len(bundles) != 1:
        raise AmosegError(
            f"--onnx exports one model; {run_dir} holds {len(bundles)}", run_dir, "pass one run"
        )
    export_bundle(bundles[0], onnx)
    model = bundles[0].model("cpu")
    size_mb = onnx.stat().st_size / 2**20
    crops = ""
    if exports_crops(model):
        crops = f"; any multiple of {model.size_multiple} for body crops"
    shape = ", ".join(str(n) for n in example_shape(model, 1)[1:])
    typer.echo(f"wrote {onnx} ({size_mb:.1f} MB, input (batch, {shape}){crops})")
    if check:
        agree, max_diff = parity_check(model, onnx)
        typer.echo(
            f"onnxruntime check: labels agree on {100 * agree:.2f}% of pixels, "
            f"max |logit diff| {max_diff:.2e}"
        )
