"""Per-organ volumes from a label map: what clinicians read off a segmentation first."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import write_json, write_text
from amoseg.labels import CLASS_NAMES, NUM_CLASSES, ORGAN_IDS

CSV_COLUMNS = ("label", "organ", "voxels", "volume_ml", "mean_hu")


def voxel_volume_ml(affine: np.ndarray) -> float:
    """One voxel's volume in mL (|det| of the affine's 3x3 part, mm³ → mL)."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0


def organ_volumes(
    labels: np.ndarray,
    image: np.ndarray,
    affine: np.ndarray,
    covered: frozenset[int] | None = None,
) -> list[dict]:
    """One row per AMOS organ 1..15: voxel count, volume (mL) and mean intensity inside.

    Intensity is HU for CT (the scan's stored values); `mean_hu` is None for an absent organ.
    `covered`: the organs the model predicts (None: all); the others get `covered: False`
    and no voxel count or volume (not covered is not 0 mL).
    """
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} and image {image.shape} differ")
    inside = labels > 0  # organs are a small share of a scan: weigh only their voxels
    organ_ids = labels[inside]
    counts = np.bincount(organ_ids, minlength=NUM_CLASSES)
    sums = np.bincount(organ_ids, weights=image[inside].astype(np.float64), minlength=NUM_CLASSES)
    per_voxel = voxel_volume_ml(affine)
    rows = []
    for organ in ORGAN_IDS:
        n = int(counts[organ])
        rows.append(
            {
                "label": organ,
                "organ": CLASS_NAMES[organ],
                "voxels": n,
                "volume_ml": round(n * per_voxel, 3),
                "mean_hu": round(float(sums[organ] / n), 1) if n else None,
            }
        )
        if covered is not None:
            rows[-1]["covered"] = organ in covered
            if organ not in covered:
                rows[-1].update(voxels=None, volume_ml=None, mean_hu=None)
    return rows


def write_volumes(rows: list[dict], csv_path: Path, json_path: Path, meta: dict[str, Any]) -> None:
    """`<name>_volumes.csv` (one row per organ) and `.json` (rows plus scan metadata)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS})
    write_text(csv_path, buffer.getvalue())
    write_json(json_path, {**meta, "organs": rows})
