"""Train/val/test split by scan: properties that must hold for any case list and seed."""

from __future__ import annotations

import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amoseg.errors import AmosegError
from amoseg.labels import modality_of
from amoseg.store.splits import SPLITS, parse_fractions, split_cases

case_numbers = st.lists(st.integers(0, 999), min_size=1, max_size=120, unique=True)
fractions = st.sampled_from(
    [(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.5, 0.25, 0.25), (0.6, 0.4, 0.0), (1.0, 0.0, 0.0)]
)


def ids_and_modalities(numbers: list[int]) -> tuple[list[str], list[str]]:
    ids = [f"amos_{n:04d}" for n in numbers]
    return ids, [modality_of(c) for c in ids]


def quiet_split(ids, modalities, fracs=(0.7, 0.15, 0.15), seed=0):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return split_cases(ids, modalities, fracs, seed)


@settings(max_examples=150, deadline=None)
@given(numbers=case_numbers, fracs=fractions, seed=st.integers(0, 2**31))
def test_every_case_in_exactly_one_split(numbers, fracs, seed):
    ids, mods = ids_and_modalities(numbers)
    out = quiet_split(ids, mods, fracs, seed)
    assert set(out) == set(SPLITS)
    listed = [c for name in SPLITS for c in out[name]]
    assert sorted(listed) == sorted(ids)  # none lost, none duplicated across splits
    for name in SPLITS:
        assert out[name] == sorted(out[name])


@settings(max_examples=100, deadline=None)
@given(numbers=case_numbers, fracs=fractions, seed=st.integers(0, 2**31), data=st.data())
def test_deterministic_for_a_seed_whatever_the_input_order(numbers, fracs, seed, data):
    ids, mods = ids_and_modalities(numbers)
    shuffled = data.draw(st.permutations(list(zip(ids, mods, strict=True))))
    first = quiet_split(ids, mods, fracs, seed)
    again = quiet_split([c for c, _ in shuffled], [m for _, m in shuffled], fracs, seed)
    assert first == again


@settings(max_examples=150, deadline=None)
@given(numbers=case_numbers, fracs=fractions, seed=st.integers(0, 2**31))
def test_fractions_respected_within_rounding(numbers, fracs, seed):
    ids, mods = ids_and_modalities(numbers)
    out = quiet_split(ids, mods, fracs, seed)
    n = len(ids)
    if n <= 3:
        return  # tiny sets are filled one by one, checked below
    # A requested split that rounds to zero cases is given one, taken from the largest.
    forced = sum(1 for f in fracs if f > 0 and round(f * n) == 0)
    for name, f in zip(SPLITS, fracs, strict=True):
        assert abs(len(out[name]) - f * n) <= 1 + forced
        if f > 0:
            assert out[name], f"{name} is empty although asked for {f}"
        else:
            assert not out[name]


@settings(max_examples=100, deadline=None)
@given(
    n_ct=st.integers(10, 80),
    n_mr=st.integers(10, 40),
    seed=st.integers(0, 2**31),
)
def test_stratified_by_modality(n_ct, n_mr, seed):
    ids = [f"amos_{i:04d}" for i in range(n_ct)] + [f"amos_{600 + i:04d}" for i in range(n_mr)]
    mods = [modality_of(c) for c in ids]
    out = split_cases(ids, mods, (0.7, 0.15, 0.15), seed)
    for modality, count in (("ct", n_ct), ("mr", n_mr)):
        for name, f in zip(SPLITS, (0.7, 0.15, 0.15), strict=True):
            got = sum(1 for c in out[name] if modality_of(c) == modality)
            assert abs(got - f * count) <= 2, (modality, name, got, f * count)


def test_seed_changes_the_split():
    ids, mods = ids_and_modalities(list(range(40)))
    assert split_cases(ids, mods, seed=0) != split_cases(ids, mods, seed=1)


def test_amos_size_split():
    """The real AMOS labelled set: 240 CT + 120 MR scans (ids >= 500 are MR)."""
    ids = [f"amos_{i:04d}" for i in range(1, 241)] + [f"amos_{i:04d}" for i in range(501, 621)]
    out = split_cases(ids, [modality_of(c) for c in ids], (0.7, 0.15, 0.15), 0)
    assert [len(out[s]) for s in SPLITS] == [252, 54, 54]
    assert sum(modality_of(c) == "mr" for c in out["test"]) == 18


@pytest.mark.parametrize(("n", "expected"), [(1, [1, 0, 0]), (2, [1, 1, 0]), (3, [1, 1, 1])])
def test_tiny_datasets_fill_train_then_val_then_test(n, expected):
    ids, mods = ids_and_modalities(list(range(n)))
    with pytest.warns(UserWarning, match=f"only {n} labelled case"):
        out = split_cases(ids, mods, (0.7, 0.15, 0.15), 0)
    assert [len(out[s]) for s in SPLITS] == expected


def test_parse_fractions():
    assert parse_fractions("0.70,0.15,0.15") == (0.7, 0.15, 0.15)
    for bad in ("0.7,0.3", "a,b,c", "0.5,0.5,0.5", "0,0.5,0.5", "-0.1,0.6,0.5", "nan,0,1"):
        with pytest.raises(AmosegError, match="split fractions"):
            parse_fractions(bad)
