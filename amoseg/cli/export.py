"""`amoseg export`: a trained run's network as an ONNX file."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("export")(export)


def export(
    run_dir: Path = typer.Argument(..., help="Run folder written by `amoseg train`."),
    onnx: Path = typer.Option(..., "--onnx", help="ONNX file to write (opset 17)."),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Compare ONNX Runtime with PyTorch on a test batch."
    ),
) -> None:
    """Export the run's best model: raw slices (batch, 1+2c, S, S) → logits (batch, 16, S, S)."""
    from amoseg.inference.export import export_onnx, exports_crops, parity_check
    from amoseg.inference.predict import load_model

    model = load_model(run_dir, device="cpu")
    export_onnx(model, onnx)
    size_mb = onnx.stat().st_size / 2**20
    crops = ""
    if exports_crops(model):
        crops = f"; any multiple of {model.size_multiple} for body crops"
    typer.echo(
        f"wrote {onnx} ({size_mb:.1f} MB, input (batch, {1 + 2 * model.context}, "
        f"{model.input_size}, {model.input_size}){crops})"
    )
    if check:
        agree, max_diff = parity_check(model, onnx)
        typer.echo(
            f"onnxruntime check: labels agree on {100 * agree:.2f}% of pixels, "
            f"max |logit diff| {max_diff:.2e}"
        )
