"""`amoseg models` and `amoseg fetch-model`: openly licensed nnU-Net models (TotalSegmentator,
MRSegmentator) listed with the AMOS organs they cover, and installed into `$AMOSEG_HOME`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("models")(models)
    app.command("fetch-model")(fetch_model)


def models() -> None:
    """List the openly licensed models amoseg can fetch: modality, spacing, the AMOS organs
    each covers, licence, download size and whether it is installed (`AMOSEG_HOME`)."""
    from rich.console import Console
    from rich.table import Table

    from amoseg.labels import CLASS_NAMES
    from amoseg.nnunet_models.catalogue import CATALOGUE
    from amoseg.nnunet_models.fetch import installed_path, models_dir

    table = Table(title=f"nnU-Net models ({models_dir()})")
    for column in ("name", "modality", "spacing (mm)", "AMOS organs", "not covered",
                   "licence", "size", "installed"):  # fmt: skip
        table.add_column(column)
    for model in CATALOGUE:
        missing = [CLASS_NAMES[i] for i in range(1, 16) if i not in model.covered]
        size = f"{model.size_bytes / 2**20:.0f} MiB" if model.size_bytes else "unknown"
        table.add_row(
            model.name, model.modality, model.spacing_mm or "see plans", f"{len(model.covered)}/15",
            ", ".join(missing) or "-", model.licence, size,
            "yes" if installed_path(model.name) else "no",
        )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def fetch_model(
    name: str = typer.Argument(..., help="A model name from `amoseg models`."),
    from_zip: Path | None = typer.Option(
        None, "--from", help="Install from this local zip (machines without internet)."
    ),
    force: bool = typer.Option(False, "--force", help="Fetch again even if installed."),
) -> None:
    """Download a model into the cache (`AMOSEG_HOME`, default ~/.cache/amoseg), verify it
    (publisher checksum where published; files, network and checkpoints always; a sha256
    manifest checked on every later use) and print its folder for `amoseg predict`."""
    from amoseg.nnunet_models.catalogue import find_model
    from amoseg.nnunet_models.fetch import fetch_model as fetch

    model = find_model(name)
    typer.echo(f"{model.title}: licence {model.licence}", err=True)
    if model.note:
        typer.echo(f"note: {model.note}", err=True)
    path, new = fetch(name, from_zip, force)
    typer.echo(f"{'installed' if new else 'already installed'}: {path}", err=True)
    typer.echo(str(path))
