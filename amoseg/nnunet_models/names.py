"""A model's own classes onto AMOS's 15 organs, by name (dataset.json `labels`).

TotalSegmentator (`kidney_left`, `inferior_vena_cava`, `urinary_bladder`, `prostate`, ...),
MRSegmentator (`right_kidney`, `left_adrenal_gland`, ...) and AMOS's own spellings all resolve
through `amoseg.labels.organ_id`. Every other class (colon, vertebrae, ...) becomes background;
AMOS organs no class maps to are *not covered* (reported as such, never as 0 mL).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES, NUM_CLASSES, organ_id


def model_classes(labels: Mapping[str, object], path: Path | None = None) -> dict[int, str]:
    """dataset.json's `labels` (name → id) as id → name, without nnU-Net's `ignore` label."""
    out: dict[int, str] = {}
    for name, value in labels.items():
        if name == "ignore":
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise AmosegError(f"label {name!r} has id {value!r}, not an integer", path)
        out[value] = name
    if sorted(out) != list(range(len(out))):
        raise AmosegError("dataset.json label ids are not 0..K-1", path)
    return out


def _amos_id(value: int | str, where: Path | None) -> int:
    amos = value if isinstance(value, int) else organ_id(str(value))
    if amos is None or not 0 <= amos < NUM_CLASSES:
        raise AmosegError(f"{value!r} is not an AMOS class", where, "use an id 0-15 or its name")
    return amos


def amos_mapping(
    classes: Mapping[int, str],
    override: Mapping[str, int | str] | None = None,
    path: Path | None = None,
) -> list[int]:
    """amos[k] = the AMOS id of model class k (0 for background and non-AMOS classes).
    `override` maps a model class (name or id as text) to an AMOS id or name."""
    override = dict(override or {})
    amos = []
    for k in range(len(classes)):
        name = classes[k]
        chosen = override.pop(name, override.pop(str(k), None))
        amos.append(_amos_id(chosen, path) if chosen is not None else organ_id(name) or 0)
    if override:
        raise AmosegError(f"the model has no class {next(iter(override))!r}", path)
    return amos


def covered_organs(amos: list[int]) -> frozenset[int]:
    """AMOS organ ids (1-15) some model class maps to."""
    return frozenset(a for a in amos if a > 0)


def coverage_table(covered: frozenset[int]) -> list[tuple[int, str, bool]]:
    """(AMOS id, organ, covered) for the 15 organs, for `amoseg models` and the CLI notes."""
    return [(i, CLASS_NAMES[i], i in covered) for i in range(1, NUM_CLASSES)]


def covered_by(backends: object) -> frozenset[int] | None:
    """The AMOS organs a backend or an ensemble predicts: the union of its members' `covered`
    (amoseg's own models cover all 15: None means all)."""
    members = backends if isinstance(backends, list | tuple) else [backends]
    union: set[int] = set()
    for member in members:
        covered = getattr(member, "covered", None)
        if covered is None:
            return None
        union |= covered
    return None if len(union) == NUM_CLASSES - 1 else frozenset(union)
