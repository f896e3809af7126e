"""nnU-Net v2 raw datasets: `amoseg prepare DATASET STORE` reads them unchanged.

The proof is a comparison: an AMOS-format set and the same set converted to nnU-Net layout
(tests/nnunet_layout.py, also renumbered) must give the same store, slice for slice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from amoseg.data.datasets import find_cases
from amoseg.data.synth import generate_dataset
from amoseg.errors import AmosegError
from amoseg.store.slice_store import SPLITS, SliceStore
from tests.badfiles import amoseg_inprocess
from tests.nnunet_layout import to_nnunet, to_nnunet_v1

# nnU-Net-style renumbering: the same 15 organs under other ids (liver first, ...)
RENUMBERED = [0, 6, 1, 3, 2, 8, 9, 4, 5, 7, 10, 13, 14, 11, 12, 15]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    """Two synthetic demo-preset scans in AMOS layout (the generator's public API)."""
    return generate_dataset(tmp_path_factory.mktemp("synth") / "amos", 2, seed=1, progress=False)


@pytest.fixture(scope="module")
def synthetic_store(synthetic, tmp_path_factory) -> SliceStore:
    return prepare(synthetic, tmp_path_factory.mktemp("store") / "amos")


def prepare(root: Path, store: Path, *args: str) -> SliceStore:
    res = amoseg_inprocess("prepare", root, store, "--size", "64", "--quiet", *args)
    assert res.returncode == 0, res.stderr
    return SliceStore(store)


def assert_same_store(a: SliceStore, b: SliceStore) -> None:
    for split in SPLITS:
        assert a.cases(split) == b.cases(split)
        for case in a.cases(split):
            np.testing.assert_array_equal(a.image(case), b.image(case))
            np.testing.assert_array_equal(a.label(case), b.label(case))
            assert a.meta(case)["modality"] == b.meta(case)["modality"]


def test_nnunet_dataset_prepares_like_its_amos_source(synthetic, synthetic_store, tmp_path):
    nnunet = to_nnunet(synthetic, tmp_path / "Dataset501_Synth")
    cases = find_cases(nnunet)
    assert [c.case_id for c in cases] == [c.case_id for c in find_cases(synthetic)]
    assert all(c.image.name.endswith("_0000.nii.gz") and c.label_lut is None for c in cases)
    assert_same_store(synthetic_store, prepare(nnunet, tmp_path / "b"))


def test_renumbered_nnunet_labels_are_mapped_back_to_amos_ids(synthetic, synthetic_store, tmp_path):
    nnunet = to_nnunet(synthetic, tmp_path / "Dataset502_Renumbered", order=RENUMBERED)
    (case, *_) = find_cases(nnunet)
    assert case.label_lut == tuple(RENUMBERED)
    assert_same_store(synthetic_store, prepare(nnunet, tmp_path / "b"))


def test_nnunet_v1_task_listing_reads_its_channel_files(synthetic, synthetic_store, tmp_path):
    task = to_nnunet_v1(synthetic, tmp_path / "Task501_Synth", order=RENUMBERED)
    cases = find_cases(task)
    assert all(c.image.name.endswith("_0000.nii.gz") for c in cases)
    assert_same_store(synthetic_store, prepare(task, tmp_path / "b"))


def test_real_amos_mini_converted_on_the_fly(realdata, tmp_path):
    source = realdata / "amos_mini"
    nnunet = to_nnunet(source, tmp_path / "Dataset503_AmosMini", order=RENUMBERED)
    assert_same_store(prepare(source, tmp_path / "a"), prepare(nnunet, tmp_path / "b"))


def test_nnunet_channel_name_gives_the_modality(synthetic, tmp_path):
    nnunet = to_nnunet(synthetic, tmp_path / "Dataset504_MR", channel="T2")
    for path in (nnunet / "imagesTr").iterdir():  # non-AMOS names: only dataset.json speaks
        path.rename(path.with_name("case" + path.name.removeprefix("amos")))
    for path in (nnunet / "labelsTr").iterdir():
        path.rename(path.with_name("case" + path.name.removeprefix("amos")))
    cases = find_cases(nnunet)
    assert {c.modality for c in cases} == {"mr"}
    assert {c.modality_source for c in cases} == {"dataset.json"}


def _spec(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text())


def _write(root: Path, spec: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(spec))


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda r, s: s.update(numTraining=7), "numTraining 7"),
        (lambda r, s: s.update(file_ending=".mha"), "not NIfTI"),
        (lambda r, s: s.update(channel_names={"0": "T2", "1": "ADC"}), "2 input channels"),
        (
            lambda r, s: next((r / "imagesTr").iterdir()).rename(r / "imagesTr" / "x_0001.nii.gz"),
            "input channel 1",
        ),
        (lambda r, s: next((r / "labelsTr").iterdir()).unlink(), "no label for case"),
        (
            lambda r, s: next((r / "imagesTr").iterdir()).rename(r / "imagesTr" / "plain.nii.gz"),
            "naming",
        ),
        (lambda r, s: s["labels"].update(ignore=16), "'ignore' label"),
        (lambda r, s: s["labels"].update(organs=[1, 2]), "regions"),
        (lambda r, s: s.update(labels={"background": 0, "tumour": 1}), "not AMOS organs"),
        (lambda r, s: s["labels"].update(spleen=6), "same id"),
    ],
)
def test_broken_nnunet_datasets_get_one_line(synthetic, tmp_path, break_it, message):
    root = to_nnunet(synthetic, tmp_path / "Dataset505_Broken")
    spec = _spec(root)
    break_it(root, spec)
    _write(root, spec)
    with pytest.raises(AmosegError, match=message) as info:
        find_cases(root)
    assert "\n" not in info.value.line()


def test_nnunet_dataset_key_lists_files_explicitly(synthetic, tmp_path):
    root = to_nnunet(synthetic, tmp_path / "Dataset506_Explicit")
    spec = _spec(root)
    ids = sorted(p.name.removesuffix("_0000.nii.gz") for p in (root / "imagesTr").iterdir())
    spec["dataset"] = {
        i: {"images": [f"imagesTr/{i}_0000.nii.gz"], "label": f"labelsTr/{i}.nii.gz"}
        for i in ids[:2]
    }
    spec["numTraining"] = 2
    _write(root, spec)
    assert [c.case_id for c in find_cases(root)] == ids[:2]
    spec["dataset"][ids[0]]["label"] = "../outside.nii.gz"
    _write(root, spec)
    with pytest.raises(AmosegError, match="outside the dataset folder"):
        find_cases(root)
