"""Segment new scans with a trained run: label maps in each scan's own geometry + volumes.

Per scan: load → reorient to RAS+ → resize slices to the model's S×S (as `prepare` did) →
the backend's inferer (`amoseg.ops.inferers`) → scores resampled to the scan's grid,
arg-max → restore orientation → optional largest-component clean-up → `<name>_seg.nii.gz`
(uint8, the input's exact header geometry), `<name>_volumes.csv/.json` and optionally
`<name>_overlay.png`.

`scan_probabilities` is the one function from (backend(s), voxels, affine) to class
probabilities on the scan's own grid (ensembles average there); `segment_scan` is its
arg-max, computed slab by slab for a single backend. `amoseg evaluate` scores test scans
through `segment_scan` too, so its native-grid numbers are those of predict + score.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch

from amoseg.data.nifti import save_nifti
from amoseg.errors import AmosegError
from amoseg.inference.backends import ScoreBackend
from amoseg.inference.bundle import read_bundles
from amoseg.inference.inputs import SEG_SUFFIX, ScanInput, expand_input, load_scan, unique_names
from amoseg.inference.outputs import OutputSettings, looks_like_ct, write_extra_outputs
from amoseg.inference.overlay import write_overlay
from amoseg.inference.pipeline import StageTimes, segment_volume
from amoseg.inference.pipeline import scan_probabilities as _scan_probabilities
from amoseg.inference.postprocess import largest_component_per_organ
from amoseg.inference.volumes import organ_volumes, voxel_volume_ml, write_volumes
from amoseg.nnunet_models.names import covered_by
from amoseg.outputs import check_new_outputs
from amoseg.preprocessing.geometry import to_canonical

#: "none", "lcc" (every organ), or the organ ids to clean up (a choice from validation folds)
Postprocess = Literal["none", "lcc"] | Sequence[int]


@dataclass
class Prediction:
    """What one scan produced, and how long each stage took."""

    name: str
    source: Path
    seg_path: Path
    volumes_csv: Path
    volumes_json: Path
    overlay: Path | None
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # one-line warnings about the input
    #: DICOM-SEG / HTML viewer files, when asked for ("dicom_seg", "html")
    extra: dict[str, Path] = field(default_factory=dict)


def default_batch_size(backend: ScoreBackend) -> int:
    return 32 if backend.device.type == "cuda" else 8


def load_model(path: str | Path, device: str = "auto") -> Any:
    """The model of a run folder or of a one-member package (`amoseg.inference.bundle`)."""
    bundles = read_bundles(path)
    if len(bundles) != 1:
        raise AmosegError(
            f"{path} holds {len(bundles)} models, not one",
            path,
            "name a single run (an ensemble predicts with `amoseg predict`)",
        )
    return bundles[0].model(device)


SYNTHETIC_NOTE = (
    "note: this model was trained on amoseg's synthetic phantoms only; its output on real "
    "scans is not meaningful"
)


def label_image_like(labels: np.ndarray, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """uint8 label image carrying the reference's header geometry unchanged: same affine,
    qform and sform matrices and codes, voxel sizes and units."""
    header = reference.header.copy()
    img = nib.Nifti1Image(labels.astype(np.uint8, copy=False), reference.affine, header)
    img.set_data_dtype(np.uint8)
    img.set_qform(reference.get_qform(), code=int(reference.header["qform_code"]))
    img.set_sform(reference.get_sform(), code=int(reference.header["sform_code"]))
    img.header.set_slope_inter(1.0, 0.0)
    img.header["cal_min"], img.header["cal_max"] = 0, 15
    img.header["descrip"] = b"amoseg organ labels (AMOS ids)"
    img.header.set_intent("label")
    return img


def _backends(backend: ScoreBackend | Sequence[ScoreBackend]) -> list[ScoreBackend]:
    backends = list(backend) if isinstance(backend, (list, tuple)) else [backend]
    if not backends:
        raise AmosegError("no model to predict with", None, "pass at least one run")
    return backends


def scan_probabilities(
    backend: ScoreBackend | Sequence[ScoreBackend],
    data: np.ndarray,
    affine: np.ndarray,
    *,
    batch_size: int | None = None,
    times: StageTimes | None = None,
) -> torch.Tensor:
    """Class probabilities of one scan on its own grid.

    `data`: (X, Y, Z) raw voxels in file order (HU for CT), `affine`: the file's voxel →
    world matrix; `backend`: one backend (`Segmenter.backends`, `backend_for_model`) or several
    (an ensemble: their probabilities are averaged on the scan's grid). Returns
    (16, X, Y, Z) float32 probabilities in file order, on the first backend's device; its
    arg-max over classes is what `segment_scan` writes. Memory: 16 float32 values per voxel
    (≈ 1.7 GB for 512×512×100), which `segment_scan` avoids for a single backend.
    """
    backends = _backends(backend)
    times = times if times is not None else StageTimes(backends[0].device)
    size = batch_size or default_batch_size(backends[0])
    return _scan_probabilities(backends, data, affine, size, times)


def segment_scan(
    backend: ScoreBackend | Sequence[ScoreBackend],
    data: np.ndarray,
    affine: np.ndarray,
    *,
    batch_size: int | None = None,
    postprocess: Postprocess = "none",
    times: StageTimes | None = None,
) -> np.ndarray:
    """(X, Y, Z) voxels in file order → uint8 labels of exactly the same shape and order:
    the arg-max of `scan_probabilities` (for one backend, computed a slab at a time)."""
    backends = _backends(backend)
    times = times if times is not None else StageTimes(backends[0].device)
    size = batch_size or default_batch_size(backends[0])
    if len(backends) == 1:
        labels = segment_volume(backends[0], data, affine, size, times)
    else:
        probs = _scan_probabilities(backends, data, affine, size, times)
        with times.stage("resize_back"):
            labels = probs.argmax(0).to(torch.uint8).cpu().numpy()
    if postprocess == "lcc":
        with times.stage("postprocess"):
            labels = largest_component_per_organ(labels)
    elif not isinstance(postprocess, str):
        with times.stage("postprocess"):
            labels = largest_component_per_organ(labels, postprocess)
    elif postprocess != "none":
        raise AmosegError(f"unknown postprocess {postprocess!r}", None, "use none or lcc")
    return labels


def output_paths(
    item: ScanInput,
    out_dir: str | Path,
    overlay: bool = False,
    outputs: OutputSettings | None = None,
) -> list[Path]:
    """Every file `predict_scan` writes for `item`: label map(s), volume CSV and JSON, and
    the overlay, DICOM-SEG and viewer when asked."""
    outputs, _note = (outputs or OutputSettings()).for_input(item.path, item.kind, item.series)
    names = [f"{SEG_SUFFIX}.nii.gz"] if outputs.nifti else []
    names += [f"{SEG_SUFFIX}.dcm"] if outputs.dicom_seg else []
    names += ["_volumes.csv", "_volumes.json"]
    names += ["_viewer.html"] if outputs.html else []
    names += ["_overlay.png"] if overlay else []
    return [Path(out_dir) / f"{item.name}{suffix}" for suffix in names]


def check_outputs(
    items: list[ScanInput],
    out_dir: str | Path,
    *,
    overlay: bool = False,
    outputs: OutputSettings | None = None,
    overwrite: bool = False,
) -> None:
    """Refuse, before any work, a batch that would replace an input file (never allowed) or an
    existing file (only with `overwrite`), or write two scans' results to one file."""
    check_new_outputs(
        [path for item in items for path in output_paths(item, out_dir, overlay, outputs)],
        overwrite=overwrite,
        inputs=[item.path for item in items],
        hint="pass --overwrite to replace it, or choose another -o folder",
    )


def predict_scan(
    backend: ScoreBackend | Sequence[ScoreBackend],
    item: ScanInput,
    out_dir: str | Path,
    *,
    batch_size: int | None = None,
    postprocess: Postprocess = "none",
    overlay: bool = False,
    outputs: OutputSettings | None = None,
    overwrite: bool = False,
    on_stage: Callable[[str, int], None] | None = None,
) -> Prediction:
    """Segment one scan (one backend, or an ensemble of several) and write its label map,
    volume table and (optionally) overlay, DICOM-SEG and HTML viewer. Existing outputs are
    refused unless `overwrite`; an input file is never replaced."""
    out_dir = Path(out_dir)
    outputs = outputs or OutputSettings()
    outputs.check_input(item.path, item.kind, item.series)
    check_outputs([item], out_dir, overlay=overlay, outputs=outputs, overwrite=overwrite)
    outputs, narrowed = outputs.for_input(item.path, item.kind, item.series)
    times = StageTimes(_backends(backend)[0].device, on_stage)
    start = time.perf_counter()
    with times.stage("load"):
        scan = load_scan(item)
    scan.notes += [narrowed] if narrowed else []
    affine = scan.image.affine
    labels = segment_scan(
        backend, scan.data, affine, batch_size=batch_size, postprocess=postprocess, times=times
    )
    seg_path = out_dir / f"{item.name}{SEG_SUFFIX}.nii.gz"
    csv_path = out_dir / f"{item.name}_volumes.csv"
    json_path = out_dir / f"{item.name}_volumes.json"
    with times.stage("write"):
        if outputs.nifti:
            save_nifti(label_image_like(labels, scan.image), seg_path)
        modality = "ct" if looks_like_ct(scan.data) else "mr"  # MR values are not HU
        rows = organ_volumes(labels, scan.data, affine, covered_by(backend), modality=modality)
        extra = write_extra_outputs(
            outputs, name=item.name, source=item.path, labels=labels, data=scan.data,
            affine=affine, organs=rows, out_dir=out_dir, series=item.series,
        )  # fmt: skip
        seg_path = seg_path if outputs.nifti else extra["dicom_seg"]
        meta = {
            "input": str(item.path),
            "input_kind": item.kind,
            "segmentation": seg_path.name,
            "shape": list(labels.shape),
            "voxel_volume_ml": voxel_volume_ml(affine),
            "postprocess": postprocess,
            "notes": scan.notes,
        }
        write_volumes(rows, csv_path, json_path, meta)
    png = None
    if overlay:
        with times.stage("overlay"):
            png = write_overlay(
                to_canonical(scan.data, affine),
                to_canonical(labels, affine),
                out_dir / f"{item.name}_overlay.png",
                title=item.name,
            )
    return Prediction(
        item.name, item.path, seg_path, csv_path, json_path, png,
        time.perf_counter() - start, dict(times.seconds), scan.notes, extra,
    )  # fmt: skip


def collect_inputs(
    paths: list[str | Path], series: str | None = None
) -> tuple[list[ScanInput], list[tuple[Path, AmosegError]]]:
    """Expand every INPUT (`series`: the DICOM series to take where an input holds
    several); a bad one becomes a failure instead of stopping the others."""
    items: list[ScanInput] = []
    failures: list[tuple[Path, AmosegError]] = []
    for path in paths:
        try:
            items.extend(expand_input(path, series))
        except AmosegError as exc:
            failures.append((Path(path), exc))
    return unique_names(items), failures


def predict_many(
    backend: ScoreBackend | Sequence[ScoreBackend],
    items: list[ScanInput],
    out_dir: str | Path,
    *,
    batch_size: int | None = None,
    postprocess: Postprocess = "none",
    overlay: bool = False,
    outputs: OutputSettings | None = None,
    overwrite: bool = False,
    on_done: Callable[[ScanInput, Prediction | AmosegError], None] | None = None,
    on_stage: Callable[[ScanInput, str, int], None] | None = None,
) -> tuple[list[Prediction], list[tuple[Path, AmosegError]]]:
    """Segment each scan; a user error on one scan is recorded and the rest still run.

    The whole batch's outputs are checked first (`check_outputs`), so a refusal costs no
    model time and leaves nothing half-written."""
    check_outputs(items, out_dir, overlay=overlay, outputs=outputs, overwrite=overwrite)
    results: list[Prediction] = []
    failures: list[tuple[Path, AmosegError]] = []
    for item in items:
        try:
            outcome: Prediction | AmosegError = predict_scan(
                backend, item, out_dir,
                batch_size=batch_size, postprocess=postprocess, overlay=overlay,
                outputs=outputs,
                overwrite=True,  # checked above for the whole batch
                on_stage=None if on_stage is None else functools.partial(on_stage, item),
            )  # fmt: skip
            results.append(outcome)
        except AmosegError as exc:
            outcome = exc
            failures.append((item.path, exc))
        if on_done is not None:
            on_done(item, outcome)
    return results, failures
