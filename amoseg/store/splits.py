"""Splitting scans into train/val/test: by scan (never by slice), stratified by modality, seeded.

Slices of one patient are nearly identical, so a slice-level split would leak test anatomy into
training. The split is computed from the full case list before any slice is filtered, so it
depends only on the case ids, their modalities, the fractions and the seed.

Stratification without per-modality rounding drift: within each modality the cases are
shuffled and given evenly spaced ranks in [0, 1); all cases are then ordered by rank and the
list is cut at the cumulative fractions. Each split thus receives every modality in proportion
(within one case), and the split sizes match the fractions within rounding.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Sequence

import numpy as np

from amoseg.errors import AmosegError

SPLITS = ("train", "val", "test")
TINY_DATASET = 3  # up to this many cases: fill train, then val, then test
#: cross-validation folds over the labelled training cases (train + val), as nnU-Net's five
N_FOLDS = 5
#: `--fold all`: train on every non-test case (its validation is then not held out)
ALL_FOLDS = "all"


def parse_fractions(text: str) -> tuple[float, float, float]:
    """'0.70,0.15,0.15' → (0.7, 0.15, 0.15), validated."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise AmosegError(
            f"cannot read split fractions '{text}'", hint="write e.g. --split 0.70,0.15,0.15"
        ) from exc
    return check_fractions(values)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if (
        len(values) != 3
        or not all(math.isfinite(f) and f >= 0 for f in values)
        or abs(sum(values) - 1.0) > 1e-6
        or values[0] <= 0
    ):
        raise AmosegError(
            f"split fractions must be three non-negative numbers summing to 1 with train > 0, "
            f"got {fractions}",
            hint="e.g. --split 0.70,0.15,0.15",
        )
    return values[0], values[1], values[2]


def split_cases(
    case_ids: Sequence[str],
    modalities: Sequence[str],
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[str]]:
    """{"train": [...], "val": [...], "test": [...]}: every case in exactly one split.

    Deterministic for (case set, modalities, fractions, seed), whatever the input order. Each
    split's list is sorted by case id.
    """
    fractions = check_fractions(fractions)
    if len(case_ids) != len(modalities):
        raise ValueError("case_ids and modalities must have the same length")
    if len(set(case_ids)) != len(case_ids):
        raise ValueError("case ids must be unique")
    modality_of = dict(zip(case_ids, modalities, strict=True))
    rng = np.random.default_rng([_stable_int(str(seed)), 0x5EED])
    ordered = _stratified_order(sorted(case_ids), modality_of, rng)
    counts = _split_counts(len(ordered), fractions)
    out: dict[str, list[str]] = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        out[name] = sorted(ordered[start : start + count])
        start += count
    return out


def _stratified_order(
    case_ids: list[str], modality_of: dict[str, str], rng: np.random.Generator
) -> list[str]:
    ranked = []
    for modality in sorted(set(modality_of.values())):
        group = [c for c in case_ids if modality_of[c] == modality]
        order = rng.permutation(len(group))
        ties = rng.random(len(group))
        for position, index in enumerate(order):
            ranked.append(((position + 0.5) / len(group), ties[position], group[index]))
    ranked.sort()
    return [case for _rank, _tie, case in ranked]


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    if n <= TINY_DATASET:
        if n:
            warnings.warn(
                f"only {n} labelled case(s): filling train, then val, then test one case each; "
                "metrics on such splits mean little",
                UserWarning,
                stacklevel=3,
            )
        wanted = [i for i, f in enumerate(fractions) if f > 0]
        counts = [0, 0, 0]
        for k in range(n):
            counts[wanted[k] if k < len(wanted) else 0] += 1
        return counts
    cumulative = np.cumsum(fractions)
    bounds = [0] + [math.floor(n * c + 0.5) for c in cumulative[:-1]] + [n]
    counts = [bounds[i + 1] - bounds[i] for i in range(3)]
    # A split the user asked for must not come out empty once there are enough cases.
    for i, f in enumerate(fractions):
        if f > 0 and counts[i] == 0:
            counts[int(np.argmax(counts))] -= 1
            counts[i] += 1
    return counts


def _stable_int(text: str) -> int:
    """Seed material independent of Python's per-process hash randomisation."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def cv_folds(
    case_ids: Sequence[str],
    modalities: Sequence[str],
    n_folds: int = N_FOLDS,
    seed: int = 0,
) -> list[dict[str, list[str]]]:
    """`n_folds` entries {"train": [...], "val": [...]}: each case is in exactly one fold's
    `val` and in every other fold's `train`.

    Stratified by modality: each modality's cases, shuffled, are dealt round-robin, the deal
    continuing from one modality to the next, so each fold's validation holds CT and MR in
    proportion and fold sizes differ by at most one. Sorted lists, deterministic for (case
    set, modalities, seed). With fewer cases than folds, some folds' `val` lists are empty
    (training such a fold is refused with one line).
    """
    if len(case_ids) != len(modalities):
        raise ValueError("case_ids and modalities must have the same length")
    modality_of = dict(zip(case_ids, modalities, strict=True))
    rng = np.random.default_rng([_stable_int(str(seed)), 0xF01D])
    dealt: list[str] = []
    for modality in sorted(set(modalities)):
        group = sorted(c for c in case_ids if modality_of[c] == modality)
        dealt += [group[i] for i in rng.permutation(len(group))]
    val = [sorted(dealt[k::n_folds]) for k in range(n_folds)]
    everyone = sorted(dealt)
    return [{"train": [c for c in everyone if c not in set(v)], "val": v} for v in val]


def select_fold(splits: dict, fold: int | str | None) -> dict[str, list[str]]:
    """The store's splits with `train`/`val` replaced by cross-validation fold `fold`
    (0..n-1), by every non-test case (`"all"`; `val` stays the store's own), or unchanged
    (None). `test` is never touched."""
    if fold is None:
        return {name: list(splits.get(name, [])) for name in SPLITS}
    test = list(splits.get("test", []))
    if str(fold) == ALL_FOLDS:
        everyone = sorted({*splits.get("train", []), *splits.get("val", [])})
        return {"train": everyone, "val": list(splits.get("val", [])), "test": test}
    folds = splits.get("folds")
    if not folds:
        raise AmosegError(
            "the store's splits.json has no cross-validation folds",
            hint="re-run `amoseg prepare` with this version to add them",
        )
    try:
        k = int(fold)
    except ValueError:
        k = -1
    if not 0 <= k < len(folds):
        raise AmosegError(f"unknown fold {fold!r}", hint=f"use 0..{len(folds) - 1} or {ALL_FOLDS}")
    return {"train": list(folds[k]["train"]), "val": list(folds[k]["val"]), "test": test}
