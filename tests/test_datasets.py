"""`find_cases` trusts no file name and no JSON value: ids, paths, modality and label sets.

Every check ends in one AmosegError line; the property tests throw random dataset.json
documents at `find_cases` and `prepare` and accept only success or that one line.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amoseg.data.datasets import MAX_DATASET_JSON_BYTES, SAFE_CASE_ID, find_cases, label_lut
from amoseg.errors import AmosegError
from amoseg.labels import (
    AMOS_DATASET_LABELS,
    CLASS_NAMES,
    modality_from_name,
    modality_of,
    organ_id,
)
from amoseg.store.prepare import prepare_dataset
from amoseg.store.slice_store import SliceStore
from tests import badfiles
from tests.badfiles import amoseg_inprocess

SIZE = str(badfiles.SIZE)


def entry(name: str, folder: str = "Tr") -> dict[str, str]:
    return {"image": f"./images{folder}/{name}", "label": f"./labels{folder}/{name}"}


def listing(root: Path, training: list, **fields) -> Path:
    spec = {"name": "AMOS", "labels": dict(AMOS_DATASET_LABELS), "training": training, **fields}
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


def good_root(root: Path, ids=("amos_0001", "amos_0002")) -> Path:
    for n, case_id in enumerate(ids):
        badfiles.good_pair(root, case_id, seed=n)
    return listing(root, [entry(f"{c}.nii.gz") for c in ids])


def one_line_error(root: Path, match: str) -> AmosegError:
    with pytest.raises(AmosegError, match=match) as info:
        find_cases(root)
    assert "\n" not in info.value.line()
    return info.value


# --- identity: case ids and paths -------------------------------------------------------


@pytest.mark.parametrize("name", ["..nii.gz", "...nii.gz", ".hidden.nii.gz", "a b.nii.gz"])
def test_unsafe_case_ids_are_refused(tmp_path, name):
    root = good_root(tmp_path)
    badfiles.good_pair(root, name.removesuffix(".nii.gz"))
    spec = json.loads((root / "dataset.json").read_text())
    listing(root, [*spec["training"], entry(name)])
    err = one_line_error(root, "is not a safe file name")
    assert err.path == root / "dataset.json"


def test_case_ids_that_differ_only_in_case_are_one_case(tmp_path):
    root = good_root(tmp_path)
    badfiles.good_pair(root, "AMOS_0001")
    listing(root, [entry("amos_0001.nii.gz"), entry("AMOS_0001.nii.gz")])
    one_line_error(root, "listed twice")


def test_dot_named_case_cannot_delete_the_stores_cases(tmp_path):
    """On main, a listed `..nii.gz` became case '.', whose folder is cases/ itself:
    the rerun replaced the store's cases with that one case's files."""
    root = good_root(tmp_path / "root")
    store = tmp_path / "store"
    assert amoseg_inprocess("prepare", root, store, "--size", SIZE, "--quiet").returncode == 0
    before = sorted(p.name for p in (store / "cases").iterdir())
    badfiles.good_pair(root, ".", seed=3)
    listing(root, [entry("amos_0001.nii.gz"), entry("amos_0002.nii.gz"), entry("..nii.gz")])
    for extra in ((), ("--overwrite", "--seed", "1")):
        res = amoseg_inprocess("prepare", root, store, "--size", SIZE, "--quiet", *extra)
        assert res.returncode == 2 and res.stderr.count("error:") == 1, res.stderr
        assert "not a safe file name" in res.stderr and "dataset.json" in res.stderr
        assert sorted(p.name for p in (store / "cases").iterdir()) == before


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_paths_must_stay_inside_the_dataset_folder(tmp_path, where):
    root = good_root(tmp_path / "root")
    outside = tmp_path / "elsewhere"
    image, _ = badfiles.good_pair(outside, "amos_0009")
    badfiles.good_pair(root, "amos_0009")  # the label is inside; only the image leads out
    written = {"parent": "../elsewhere/imagesTr/amos_0009.nii.gz", "absolute": str(image)}[where]
    listing(root, [entry("amos_0001.nii.gz"), {**entry("amos_0009.nii.gz"), "image": written}])
    err = one_line_error(root, "leads outside the dataset folder")
    assert err.path == root / "dataset.json"


def test_symlinks_inside_the_folder_are_fine(tmp_path):
    root = good_root(tmp_path)
    (root / "imagesTr" / "amos_0003.nii.gz").symlink_to(root / "imagesTr" / "amos_0001.nii.gz")
    (root / "labelsTr" / "amos_0003.nii.gz").symlink_to(root / "labelsTr" / "amos_0001.nii.gz")
    listing(root, [entry("amos_0001.nii.gz"), entry("amos_0003.nii.gz")])
    assert [c.case_id for c in find_cases(root)] == ["amos_0001", "amos_0003"]


# --- dataset.json documents -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"training": ' + "[" * 50_000 + "]" * 50_000 + "}", "nested too deeply"),
        ("[]", "is an array, not a JSON object"),
        ("3", "is a number, not a JSON object"),
        ("null", "is null, not a JSON object"),
        ('{"numTraining": 1' + "0" * 5000 + "}", "not valid JSON"),
        ('{"training": [], "labels": {"0": "background", "1": "tumour"}}', "no labelled"),
    ],
)
def test_odd_dataset_json_documents_get_one_line(tmp_path, text, message):
    (tmp_path / "dataset.json").write_text(text)
    one_line_error(tmp_path, message)


def test_huge_dataset_json_is_refused_before_reading(tmp_path):
    path = tmp_path / "dataset.json"
    with path.open("wb") as fh:
        fh.write(b"{")
        fh.truncate(MAX_DATASET_JSON_BYTES + 1)  # sparse: no 32 MiB actually written
    one_line_error(tmp_path, "MiB, far larger than any dataset listing")


def test_deeply_nested_dataset_json_is_one_line_in_the_cli(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "dataset.json").write_text("[" * 100_000 + "]" * 100_000)
    res = amoseg_inprocess("prepare", tmp_path / "root", tmp_path / "store")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert [line for line in res.stderr.splitlines() if line] == [
        f"error: dataset.json is nested too deeply to read: {tmp_path / 'root' / 'dataset.json'} "
        "(fix or regenerate it)"
    ]


# --- modality: from the files' own statements ----------------------------------------------


def test_digits_in_other_names_are_not_the_amos_id_rule():
    assert modality_of("ct_v2_001") == "ct"  # main: digits "2001" >= 500 → MR
    assert modality_of("patient_0507") == "ct"
    assert modality_of("patient_0507", default="mr") == "mr"
    assert modality_of("amos_0507") == "mr" and modality_of("amos_0499") == "ct"


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        *[("CT", "ct"), ("ct", "ct"), ("MRI", "mr"), ("MR-T1", "mr"), ("T2", "mr")],
        *[("ADC", "mr"), ("noNorm", None), ("either_CT_or_MR", None), ("zscore", None)],
        (3, None),
    ],
)
def test_modality_names(name, modality):
    assert modality_from_name(name) == modality


def test_modality_precedence(tmp_path):
    """Entry field > AMOS id > dataset-wide field > default. AMOS22's own dataset.json says
    {"0": "CT"} for its MR scans too, hence the id rule before the dataset-wide field."""
    ids = ("amos_0001", "amos_0600", "ct_v2_001", "case_7", "case_8")
    for n, case_id in enumerate(ids):
        badfiles.good_pair(tmp_path, case_id, seed=n)
    entries = [entry(f"{c}.nii.gz") for c in ids]
    entries[4]["modality"] = "MR"
    listing(tmp_path, entries, modality={"0": "CT"})
    got = {c.case_id: (c.modality, c.modality_source) for c in find_cases(tmp_path)}
    assert got == {
        "amos_0001": ("ct", "AMOS id"),
        "amos_0600": ("mr", "AMOS id"),
        "ct_v2_001": ("ct", "dataset.json"),
        "case_7": ("ct", "dataset.json"),
        "case_8": ("mr", "dataset.json entry"),
    }
    listing(tmp_path, entries, modality={"0": "MRI"})
    by_id = {c.case_id: c.modality for c in find_cases(tmp_path)}
    assert by_id["ct_v2_001"] == "mr"  # what dataset.json says, whatever the name
    listing(tmp_path, entries)
    with pytest.warns(UserWarning, match=r"2 case\(s\) have no modality .* taken as MR"):
        cases = find_cases(tmp_path, default_modality="mr")
    assert [c.modality for c in cases] == ["ct", "mr", "mr", "mr", "mr"]
    entries[3]["modality"] = "PET"
    listing(tmp_path, entries)
    one_line_error(tmp_path, "modality 'PET' is neither CT nor MR")


def test_prepare_modality_filter_uses_the_stated_modality(tmp_path):
    """`--modality mr` on a set that says MR in dataset.json (names without AMOS ids)."""
    ids = ("ct_v2_001", "ct_v2_002", "ct_v2_003")
    for n, case_id in enumerate(ids):
        badfiles.good_pair(tmp_path / "root", case_id, seed=n)
    listing(tmp_path / "root", [entry(f"{c}.nii.gz") for c in ids], modality={"0": "CT"})
    res = amoseg_inprocess(
        "prepare", tmp_path / "root", tmp_path / "s", "--size", SIZE, "--modality", "mr"
    )
    assert res.returncode == 2 and "no MR cases" in res.stderr  # main: all three were MR
    res = amoseg_inprocess(
        "prepare", tmp_path / "root", tmp_path / "s", "--size", SIZE, "--modality", "ct"
    )
    assert res.returncode == 0, res.stderr
    store = SliceStore(tmp_path / "s")
    cases = [c for split in ("train", "val", "test") for c in store.cases(split)]
    assert sorted(cases) == list(ids)
    assert {store.meta(c)["modality"] for c in cases} == {"ct"}


# --- label sets ----------------------------------------------------------------------------


def test_amos_label_set_with_its_own_spellings_passes():
    assert label_lut(dict(AMOS_DATASET_LABELS), Path("dataset.json")) is None
    assert label_lut({"0": "background", "6": "liver"}, Path("dataset.json")) is None
    clean = {name: i for i, name in enumerate(CLASS_NAMES)}  # bench/vs_nnunet.py writes these
    assert label_lut(clean, Path("dataset.json")) is None
    assert organ_id("gall bladder") == organ_id("Gallbladder") == 4
    assert organ_id("arota") == organ_id("aorta") == 8
    assert organ_id("postcava (IVC)") == organ_id("inferior_vena_cava") == 9


def test_differently_numbered_amos_organs_are_remapped_by_name():
    lut = label_lut({"0": "background", "1": "liver", "2": "arota"}, Path("d.json"))
    assert lut == (0, 6, 8)
    lut = label_lut({"background": 0, "spleen": 2, "Kidney_Left": 1}, Path("d.json"))
    assert lut == (0, 3, 1)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"0": "background", "1": "tumour", "2": "cyst"}, "not AMOS organs"),
        ({"0": "liver", "1": "spleen"}, "label 0 must be background"),
        ({"background": 3, "liver": 1}, "background must be label 0"),
        ({"x": "background"}, "not all numbers"),
        ({"background": 0, "liver": True}, "mix ids and names"),
        ({"background": 0, "liver": 70000}, "outside 0..65535"),
        ([1, 2], "is not a label set"),
        ({}, "is not a label set"),
    ],
)
def test_other_label_sets_get_one_line(labels, message):
    with pytest.raises(AmosegError, match=message) as info:
        label_lut(labels, Path("dataset.json"))
    assert "\n" not in info.value.line()


def test_prepare_remaps_labels_and_refuses_undeclared_ids(tmp_path):
    root = good_root(tmp_path / "root")  # labels hold AMOS ids 1 and 6
    listing(
        root,
        [entry("amos_0001.nii.gz")],
        labels={"0": "background", "1": "liver", "6": "spleen"},
    )
    assert amoseg_inprocess("prepare", root, tmp_path / "s", "--size", SIZE).returncode == 0
    store = SliceStore(tmp_path / "s")
    (case,) = [c for split in ("train", "val", "test") for c in store.cases(split)]
    assert set(np.unique(store.label(case))) == {0, 1, 6}
    swapped = store.label(case)
    listing(root, [entry("amos_0001.nii.gz")])  # AMOS ids: 1 spleen, 6 liver
    assert amoseg_inprocess("prepare", root, tmp_path / "t", "--size", SIZE).returncode == 0
    plain = SliceStore(tmp_path / "t").label(case)
    np.testing.assert_array_equal(swapped == 6, plain == 1)  # file's "1" is liver there
    listing(root, [entry("amos_0001.nii.gz")], labels={"0": "background", "6": "spleen"})
    res = amoseg_inprocess("prepare", root, tmp_path / "u", "--size", SIZE)
    assert res.returncode == 2 and "label ids 1 are not in dataset.json's labels" in res.stderr


# --- property tests: random dataset.json documents ----------------------------------------

JSON_LEAF = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
JSON_ANY = st.recursive(
    JSON_LEAF,
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)
NAMES = st.sampled_from(
    ["amos_0001.nii.gz", "amos_0002.nii.gz", "..nii.gz", ".nii.gz", "x/../../y.nii.gz", "a b"]
)
PATHS = st.one_of(
    NAMES.map(lambda n: f"./imagesTr/{n}"),
    NAMES.map(lambda n: f"./labelsTr/{n}"),
    st.sampled_from(["../outside.nii.gz", "/etc/passwd.nii.gz", "", "imagesTr", "\x00.nii.gz"]),
    st.text(max_size=20),
)
ENTRY = st.fixed_dictionaries(
    {"image": PATHS, "label": PATHS},
    optional={"modality": st.sampled_from(["CT", "MR", "PET", 3, None, {"0": "CT"}])},
)
LABELS = st.one_of(
    st.just(dict(AMOS_DATASET_LABELS)),
    st.dictionaries(st.sampled_from(["0", "1", "6", "x", "99999999"]), st.text(max_size=12)),
    st.dictionaries(
        st.sampled_from(["background", "liver", "spleen", "tumour", "ignore", "arota"]),
        st.integers(-2, 70_000) | st.lists(st.integers(0, 3), max_size=2) | st.booleans(),
    ),
    JSON_ANY,
)
SPEC = st.fixed_dictionaries(
    {},
    optional={
        "training": st.lists(ENTRY | JSON_ANY, max_size=4) | JSON_ANY,
        "validation": st.lists(ENTRY, max_size=2),
        "test": st.lists(ENTRY | JSON_ANY, max_size=2),
        "labels": LABELS,
        "modality": st.sampled_from([{"0": "CT"}, {"0": "MRI"}, "CT", {}, 5]) | JSON_ANY,
        "channel_names": st.sampled_from([{"0": "CT"}, {"0": "T2", "1": "ADC"}, []]),
        "file_ending": st.sampled_from([".nii.gz", ".nii", ".mha", 7]),
        "numTraining": st.integers(-1, 3) | JSON_ANY,
        "dataset": st.dictionaries(
            st.text(max_size=10), st.fixed_dictionaries({"images": st.lists(PATHS), "label": PATHS})
        )
        | JSON_ANY,
    },
)
# Mostly well-formed AMOS listings with a few odd values: these reach prepare's file reading.
PAIRED = NAMES.map(lambda n: {"image": f"./imagesTr/{n}", "label": f"./labelsTr/{n}"})
PLAUSIBLE = st.fixed_dictionaries(
    {
        "training": st.lists(
            st.sampled_from(["amos_0001.nii.gz", "amos_0002.nii.gz"]).map(entry) | PAIRED,
            min_size=1,
            max_size=3,
        )
    },
    optional={
        "labels": st.sampled_from(
            [
                dict(AMOS_DATASET_LABELS),
                {"0": "background", "1": "liver", "6": "spleen", "3": "arota"},
                {"background": 0, "spleen": 1, "liver": 6},
                {"0": "background", "1": "tumour"},
            ]
        ),
        "modality": st.sampled_from([{"0": "CT"}, {"0": "MRI"}, "T2", {"0": "noNorm"}]),
        "numTraining": st.integers(0, 3),
    },
)
DOCUMENT = PLAUSIBLE | SPEC | JSON_ANY
PROPERTY = settings(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory) -> Path:
    """Good files for amos_0001/0002, plus a `..nii.gz` pair."""
    root = tmp_path_factory.mktemp("fuzz")
    for n, case_id in enumerate(("amos_0001", "amos_0002", ".")):
        badfiles.good_pair(root, case_id, seed=n)
    return root


def _found_cases_are_trustworthy(root: Path, cases) -> None:
    real = root.resolve()
    for case in cases:
        assert SAFE_CASE_ID.fullmatch(case.case_id)
        assert case.image.resolve().is_relative_to(real)
        assert case.label.resolve().is_relative_to(real)
        assert case.modality in ("ct", "mr")


@PROPERTY
@given(document=DOCUMENT)
def test_find_cases_on_random_dataset_json(fuzz_root, document):
    (fuzz_root / "dataset.json").write_text(json.dumps(document))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "taken as CT" notes for non-AMOS ids
            cases = find_cases(fuzz_root)
    except AmosegError as exc:
        assert "\n" not in exc.line() and len(exc.line()) < 1000
    else:
        _found_cases_are_trustworthy(fuzz_root, cases)


@settings(PROPERTY, max_examples=40)
@given(document=PLAUSIBLE | SPEC)
def test_prepare_on_random_dataset_json(fuzz_root, document):
    (fuzz_root / "dataset.json").write_text(json.dumps(document))
    with tempfile.TemporaryDirectory() as out:
        try:
            summary = prepare_dataset(fuzz_root, Path(out) / "store", size=8, progress=False)
        except AmosegError as exc:
            assert "\n" not in exc.line() and len(exc.line()) < 1000
        else:
            assert summary["total"]["cases"] >= 1
            assert (Path(out) / "store" / "store.json").exists()


def test_modality_default_is_one_warning_line_in_prepare_and_plan(tmp_path):
    ids = ("case_a", "case_b", "case_c")
    for n, case_id in enumerate(ids):
        badfiles.good_pair(tmp_path / "root", case_id, seed=n)
    listing(tmp_path / "root", [entry(f"{c}.nii.gz") for c in ids])
    for argv in (
        ("prepare", tmp_path / "root", tmp_path / "store", "--size", SIZE, "--quiet"),
        ("plan", tmp_path / "root", "-o", tmp_path / "plan.json", "--quiet"),
    ):
        res = amoseg_inprocess(*argv)
        assert res.returncode == 0, res.stderr
        notes = [line for line in res.stderr.splitlines() if "no modality" in line]
        assert notes == [
            "warning: 3 case(s) have no modality in dataset.json and no AMOS id (amos_NNNN): "
            "taken as CT"
        ], res.stderr
        assert "UserWarning" not in res.stderr


def test_symlinks_leading_out_of_the_folder_are_followed(tmp_path):
    """An nnU-Net raw dataset whose images link to AMOS's own files (issue 27): accepted, and
    prepare reads through the links without writing or deleting anything where they lead."""
    amos = badfiles.amos_root(tmp_path / "amos")
    raw = tmp_path / "Dataset001_AMOS"
    badfiles.nnunet_root(raw)
    for image in sorted((raw / "imagesTr").iterdir()):
        case = image.name.removesuffix("_0000.nii.gz")
        image.unlink()
        image.symlink_to(amos / "imagesTr" / f"{case}.nii.gz")
    labels = raw / "labelsTr"
    for label in labels.iterdir():
        label.unlink()
    labels.rmdir()
    labels.symlink_to(amos / "labelsTr", target_is_directory=True)  # a linked folder too
    before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in amos.rglob("*")}
    cases = find_cases(raw)
    assert [c.image.parent for c in cases] == [raw / "imagesTr"] * len(badfiles.GOOD_IDS)
    res = badfiles.amoseg_inprocess("prepare", raw, tmp_path / "store", "--size", 16, "--quiet")
    assert res.returncode == 0, res.stderr
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in amos.rglob("*")} == before
