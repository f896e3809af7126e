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


#: postprocessing.json is a few hundred bytes; anything past this is not one (checked
#: before it is read into memory)
MAX_POSTPROCESSING_BYTES = 1 << 20


def check_postprocessing(doc: Any, path: str | Path) -> list[int]:
    """The organ ids a loaded `postprocessing.json` chose for the clean-up, or AmosegError
    naming the file and the key: a hand-edited or damaged choice is refused before any model
    runs, not after (and an id outside 1-15 is never silently ignored)."""

    hint = "fix it, delete it, or rerun `amoseg cv`"
    if not isinstance(doc, dict):
        raise AmosegError(f"{POSTPROCESSING_FILE} is not a JSON object", path, hint)
    organs = doc.get("lcc_organs")
    if not isinstance(organs, list):
        raise AmosegError(
            f"{POSTPROCESSING_FILE}: lcc_organs must be a list of organ ids", path, hint
        )
    for organ in organs:
        if isinstance(organ, bool) or not isinstance(organ, int) or organ not in ORGAN_IDS:
            raise AmosegError(
                f"{POSTPROCESSING_FILE}: lcc_organs holds {str(organ)[:40]!r}, not an organ id "
                f"{ORGAN_IDS[0]}-{ORGAN_IDS[-1]}",
                path,
                hint,
            )
    return sorted(set(organs))


def read_postprocessing(path: str | Path) -> list[int]:
    """Read and check one `postprocessing.json` (`check_postprocessing`)."""
    from amoseg.atomic import read_json

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # read_json names what is wrong with it
    if size > MAX_POSTPROCESSING_BYTES:
        raise AmosegError(
            f"{POSTPROCESSING_FILE} is {size} bytes, more than a saved choice can be "
            f"({MAX_POSTPROCESSING_BYTES})",
            path,
            "delete it, or rerun `amoseg cv`",
        )
    return check_postprocessing(read_json(path, POSTPROCESSING_FILE), path)


def saved_lcc_organs(run_dirs: Sequence[str | Path]) -> list[int] | None:
    """The organs every run's `postprocessing.json` chose for the clean-up (their common
    choice), or None when a run has no saved choice. Every file is checked
    (`read_postprocessing`), so call it before the models run."""
    chosen: set[int] | None = None
    missing = False
    for run in run_dirs:
        path = Path(run) / POSTPROCESSING_FILE
        if not path.is_file():
            missing = True
            continue
        organs = set(read_postprocessing(path))
        chosen = organs if chosen is None else chosen & organs
    return None if chosen is None or missing else sorted(chosen)
