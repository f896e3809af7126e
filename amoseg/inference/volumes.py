"""Per-organ volumes from a label map: what clinicians read off a segmentation first.

An organ that touches the scan's edge (a face of the voxel array: the first or last slice,
or the in-plane border) is cut by it, and its volume is that of the part inside the scan
only. It is still reported, with `truncated` true: a reader sees the number and that it is
not the whole organ. (TotalSegmentator instead leaves such organs out of its statistics by
default, `--stats_include_incomplete` to keep them; a flagged row keeps the partial figure
for whoever needs it, e.g. a slab's liver portion, without passing it off as whole.)

Intensity: `mean_intensity` for every scan; `mean_hu` as well for CT (the same number, the
name scripts read), never for MR, whose values are not Hounsfield units.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import write_json, write_text
from amoseg.labels import CLASS_NAMES, NUM_CLASSES, ORGAN_IDS, truncated_organs

CSV_COLUMNS = (
    "label", "organ", "voxels", "volume_ml", "mean_hu", "mean_intensity", "truncated", "covered",
)  # fmt: skip


def voxel_volume_ml(affine: np.ndarray) -> float:
    """One voxel's volume in mL (|det| of the affine's 3x3 part, mm³ → mL)."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0


def organ_volumes(
    labels: np.ndarray,
    image: np.ndarray,
    affine: np.ndarray,
    covered: frozenset[int] | None = None,
    *,
    modality: str | None = None,
) -> list[dict]:
    """One row per AMOS organ 1..15: voxel count, volume (mL), mean intensity inside, and
    whether the scan's edge cuts it (`truncated`).

    `modality` "mr" drops `mean_hu` (MR values are not HU); CT or unknown keep it beside
    `mean_intensity`. Means are None for an absent organ. `covered`: the organs the model
    predicts (None: all); the others get `covered: False` and no voxel count, volume or
    mean (not covered is not 0 mL).
    """
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ")
    inside = labels > 0  # organs are a small share of a scan: weigh only their voxels
    organ_ids = labels[inside]
    counts = np.bincount(organ_ids, minlength=NUM_CLASSES)
    sums = np.bincount(organ_ids, weights=image[inside].astype(np.float64), minlength=NUM_CLASSES)
    per_voxel = voxel_volume_ml(affine)
    cut = truncated_organs(labels)
    rows = []
    for organ in ORGAN_IDS:
        n = int(counts[organ])
        mean = round(float(sums[organ] / n), 1) if n else None
        row: dict[str, Any] = {
            "label": organ,
            "organ": CLASS_NAMES[organ],
            "voxels": n,
            "volume_ml": round(n * per_voxel, 3),
        }
        if modality != "mr":
            row["mean_hu"] = mean
        row["mean_intensity"] = mean
        row["truncated"] = organ in cut
        rows.append(row)
        if covered is not None:
            row["covered"] = organ in covered
            if organ not in covered:
                row.update(voxels=None, volume_ml=None, mean_intensity=None, truncated=None)
                if "mean_hu" in row:
                    row["mean_hu"] = None
    return rows


def write_volumes(rows: list[dict], csv_path: Path, json_path: Path, meta: dict[str, Any]) -> None:
    """`<name>_volumes.csv` (one row per organ) and `.json` (rows plus scan metadata)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in CSV_COLUMNS})
    write_text(csv_path, buffer.getvalue())
    write_json(json_path, {**meta, "organs": rows})


def _cell(value: Any) -> Any:
    """CSV text: empty for no value (an absent organ's mean, MR's mean_hu), true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value
