"""Keep the largest 3D connected component of each organ, and choose the organs to do it for.

Slice-wise models scatter small false islands (a "spleen" blob in the liver); every AMOS
organ is one connected body, so dropping all but its largest component removes them. Where
that helps is measured, as nnU-Net does: `choose_lcc_organs` keeps the clean-up for an organ
only where it raised the mean validation Dice over the cross-validation folds; the choice is
saved with the runs (`postprocessing.json`) and applied by `predict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from amoseg.errors import AmosegError
from amoseg.labels import ORGAN_IDS

# 26-connectivity: voxels touching at a corner belong to one organ (thin vessels, oblique
# structures such as the adrenal glands stay whole).
STRUCTURE = ndimage.generate_binary_structure(3, 3)


def largest_component_per_organ(
    labels: np.ndarray, organs: Iterable[int] | None = None
) -> np.ndarray:
    """Labels with every organ (or only `organs`) reduced to its largest 26-connected
    component (the rest → 0).

    Works inside each organ's bounding box (`find_objects`), so the cost follows organ size,
    not volume size × number of organs.
    """
    out = labels.copy()
    only = None if organs is None else {int(o) for o in organs}
    for organ, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None or (only is not None and organ not in only):
            continue
        mask = labels[box] == organ
        components, n = ndimage.label(mask, structure=STRUCTURE)
        if n <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        keep = int(sizes.argmax())
        region = out[box]
        region[mask & (components != keep)] = 0
    return out


#: the choice, saved in each fold's run folder (and the cross-validation root) by `amoseg cv`
POSTPROCESSING_FILE = "postprocessing.json"


def choose_lcc_organs(
    raw: Sequence[Mapping[int, float | None]], lcc: Sequence[Mapping[int, float | None]]
) -> dict[int, dict[str, float]]:
    """Per organ: mean validation Dice without and with the largest-component clean-up, and
    whether to apply it (only where it strictly raised the mean).

    `raw[i]` / `lcc[i]` map organ id → Dice of validation case i (None or NaN where the organ
    is absent from both truth and prediction: not counted).
    """
    out: dict[int, dict[str, float]] = {}
    organs = sorted({o for case in raw for o in case})
    for organ in organs:
        pairs = [
            (float(r[organ]), float(c[organ]))
            for r, c in zip(raw, lcc, strict=True)
            if _finite(r.get(organ)) and _finite(c.get(organ))
        ]
        if not pairs:
            continue
        before = float(np.mean([p[0] for p in pairs]))
        after = float(np.mean([p[1] for p in pairs]))
        out[organ] = {"dice": before, "dice_lcc": after, "apply": bool(after > before)}
    return out


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(float(value))


def check_lcc_choice(value: Any, path: Path | None = None) -> dict[str, Any]:
    """A saved clean-up choice as read from `postprocessing.json`, checked before any model
    runs: an object whose `lcc_organs` lists AMOS organ ids (1-15) once each."""
    organs = value.get("lcc_organs", []) if isinstance(value, dict) else None
    if not isinstance(organs, list) or not all(
        isinstance(o, int) and not isinstance(o, bool) and o in ORGAN_IDS for o in organs
    ):
        raise AmosegError(
            f'{POSTPROCESSING_FILE} must hold {{"lcc_organs": [organ ids 1-15]}}',
            path,
            "re-run `amoseg cv` to write it again, or delete it to predict without clean-up",
        )
    return {**value, "lcc_organs": sorted(set(organs))}


def saved_lcc_organs(run_dirs: Sequence[str | Path]) -> list[int] | None:
    """The organs every run's `postprocessing.json` chose for the clean-up (their common
    choice), or None when a run has no saved choice."""
    from amoseg.atomic import read_json

    chosen: set[int] | None = None
    for run in run_dirs:
        path = Path(run) / POSTPROCESSING_FILE
        if not path.is_file():
            return None
        organs = set(check_lcc_choice(read_json(path, POSTPROCESSING_FILE), path)["lcc_organs"])
        chosen = organs if chosen is None else chosen & organs
    return None if chosen is None else sorted(chosen)
