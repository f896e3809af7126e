"""Cross-validation folds: disjoint validation sets that cover every training case once."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amoseg.errors import AmosegError
from amoseg.labels import modality_of
from amoseg.store.splits import N_FOLDS, cv_folds, select_fold


def ids_of(numbers: list[int]) -> tuple[list[str], list[str]]:
    ids = [f"amos_{n:04d}" for n in numbers]
    return ids, [modality_of(c) for c in ids]


@settings(max_examples=100, deadline=None)
@given(
    numbers=st.lists(st.integers(0, 999), min_size=1, max_size=80, unique=True),
    seed=st.integers(0, 99),
)
def test_folds_are_disjoint_and_cover_every_training_case_once(numbers, seed):
    ids, mods = ids_of(numbers)
    folds = cv_folds(ids, mods, seed=seed)
    assert len(folds) == N_FOLDS
    vals = [c for f in folds for c in f["val"]]
    assert sorted(vals) == sorted(ids)  # each case validated exactly once
    for f in folds:
        assert not set(f["train"]) & set(f["val"])
        assert sorted(f["train"] + f["val"]) == sorted(ids)
        assert f["val"] == sorted(f["val"])
    sizes = [len(f["val"]) for f in folds]
    assert max(sizes) - min(sizes) <= 1


def test_folds_are_stratified_by_modality_and_seeded():
    ids = [f"amos_{n:04d}" for n in [*range(1, 41), *range(500, 510)]]  # 40 CT, 10 MR
    mods = [modality_of(c) for c in ids]
    folds = cv_folds(ids, mods, seed=0)
    assert [sum(modality_of(c) == "mr" for c in f["val"]) for f in folds] == [2] * 5
    assert cv_folds(list(reversed(ids)), list(reversed(mods)), seed=0) == folds
    assert cv_folds(ids, mods, seed=1) != folds


def test_select_fold_keeps_test_and_rejects_unknown_folds():
    ids, mods = ids_of(list(range(1, 11)))
    splits = {"train": ids[:7], "val": ids[7:], "test": ["amos_0100"]}
    splits["folds"] = cv_folds(ids, mods)
    two = select_fold(splits, 2)
    assert two["val"] == splits["folds"][2]["val"] and two["test"] == ["amos_0100"]
    everything = select_fold(splits, "all")
    assert everything["train"] == sorted(ids) and everything["test"] == ["amos_0100"]
    assert select_fold(splits, None)["train"] == ids[:7]
    with pytest.raises(AmosegError, match="unknown fold"):
        select_fold(splits, 5)
    with pytest.raises(AmosegError, match="no cross-validation folds"):
        select_fold({"train": ids, "val": [], "test": []}, 0)
