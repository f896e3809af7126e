"""`amoseg view`: a self-contained HTML viewer of a label map (and its scan), no server."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("view")(view)


def view(
    segmentation: Path = typer.Argument(..., help="Label map (.nii/.nii.gz, AMOS ids 0-15)."),
    image: Path | None = typer.Argument(
        None, help="The scan it segments (NIfTI or a DICOM series folder); optional."
    ),
    out: Path | None = typer.Option(
        None, "-o", "--out", help="HTML file to write (default: beside SEGMENTATION)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing HTML file."),
) -> None:
    """Write one HTML file (axial / coronal / sagittal slices with sliders, the organ overlay
    with per-organ toggles and opacity, organ volumes) that opens offline in any browser."""
    import numpy as np

    from amoseg.data.nifti import case_id_of, label_array, load_nifti
    from amoseg.errors import AmosegError
    from amoseg.inference.inputs import expand_input, load_scan
    from amoseg.inference.outputs import looks_like_ct
    from amoseg.inference.volumes import organ_volumes
    from amoseg.render.viewer import image_on_label_grid, write_viewer

    seg = load_nifti(segmentation, what="label")
    labels = label_array(seg, segmentation)
    name = case_id_of(segmentation)
    target = out or segmentation.with_name(f"{name}_viewer.html")
    if target.suffix.lower() not in {".html", ".htm"}:
        raise AmosegError("the viewer file name must end in .html", target)
    if target.exists() and not overwrite:
        raise AmosegError("output file exists", target, "pass --overwrite to replace it")
    data = None
    if image is not None:
        items = expand_input(image)
        if len(items) != 1:
            raise AmosegError(f"IMAGE holds {len(items)} scans", image, "pass one scan")
        scan = load_scan(items[0])
        data = image_on_label_grid(scan.data, scan.image.affine, labels.shape, seg.affine, image)
    organs = organ_volumes(labels, data if data is not None else np.zeros(labels.shape), seg.affine)
    if data is None:
        for row in organs:
            row["mean_hu"] = None
    modality = "ct" if data is None or looks_like_ct(data) else "mr"
    write_viewer(target, labels, seg.affine, organs, data, title=name, modality=modality)
    size_mb = target.stat().st_size / 2**20
    typer.echo(f"wrote {target} ({size_mb:.1f} MB)")
