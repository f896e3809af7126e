"""plan.json and postprocessing.json as a user may leave them: every value is checked where the
file is read (one AmosegError naming the file and the key), never a crash, and nothing is
allocated past MAX_RESAMPLED_VOXELS before the check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amoseg.errors import AmosegError
from amoseg.inference.postprocess import (
    MAX_POSTPROCESSING_BYTES,
    check_postprocessing,
    read_postprocessing,
    saved_lcc_organs,
)
from amoseg.planning.plan import Plan, PlanError, check_memory_gb
from amoseg.preprocessing.preprocessor import MAX_RESAMPLED_VOXELS, Preprocessor

FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def good_plan() -> dict:
    return {
        "version": 1,
        "dataset": "/data/amos",
        "median_spacing": [0.8, 0.8, 5.0],
        "configurations": {
            "2d": {"dims": 2, "spacing": [0.8, 0.8, 5.0], "resample_z": False,
                   "patch_size": [512, 512], "batch_size": 12, "memory_budget_gb": 8.0,
                   "normalisation": {"ct": {"scheme": "ct", "clip": [-1000.0, 1000.0],
                                            "mean": 0.0, "std": 1.0}},
                   "network": {"class": "unet", "args": {"base": 32, "depth": 4}},
                   "body_crop": {"threshold": -500.0}, "context": 1, "keep": "all"},
        },
        "fingerprint": {},
    }  # fmt: skip


def test_the_good_plan_loads():
    assert Plan.from_dict(good_plan()).configurations["2d"].spacing == (0.8, 0.8, 5.0)


@pytest.mark.parametrize(
    ("key", "value", "names"),
    [
        ("median_spacing", 0.8, "median_spacing"),
        ("median_spacing", [0.8, 0.8], "median_spacing"),
        ("median_spacing", [0.8, 0.8, 1e-9], "median_spacing"),
        ("spacing", [0.0008, 0.8, 5.0], "configurations.2d.spacing"),
        ("spacing", [0.8, 0.8, 1e6], "configurations.2d.spacing"),
        ("memory_budget_gb", float("inf"), "configurations.2d.memory_budget_gb"),
        ("memory_budget_gb", 1e9, "configurations.2d.memory_budget_gb"),
        ("network", {"class": "../unet"}, "configurations.2d.network.class"),
        ("network", {"class": ["unet"]}, "configurations.2d.network.class"),
        ("network", {"class": "unet", "args": {"base": {"a": 1}}},
         "configurations.2d.network.args"),
        ("network", {"class": "unet", "args": {str(i): i for i in range(100)}},
         "configurations.2d.network.args"),
        ("dataset", ["/data"], "dataset"),
        ("fingerprint", [1, 2], "fingerprint"),
    ],
)  # fmt: skip
def test_each_plan_field_is_checked_and_named(key, value, names):
    plan = good_plan()
    config = plan["configurations"]["2d"]
    (config if key in config else plan)[key] = value
    with pytest.raises(PlanError, match=names.replace(".", r"\.")) as caught:
        Plan.from_dict(plan, Path("plan.json"))
    assert "plan.json" in caught.value.line()


@pytest.mark.parametrize(
    ("args", "wrong"),
    [({"base": 0}, "hparams base is out of range"),
     ({"depth": "4"}, "hparams depth must be a number"),
     ({"stages": 4}, "unknown network.args stages")],
)  # fmt: skip
def test_plan_network_args_are_checked_by_their_recipe(args, wrong):
    """network.args are the named recipe's own Params (unet has depth, not stages), checked
    at `prepare` with the field named."""
    from amoseg.models.registry import check_plan_networks

    plan = good_plan()
    plan["configurations"]["2d"]["network"] = {"class": "unet", "args": args}
    with pytest.raises(AmosegError, match=r"configurations\.2d\.network\.args") as caught:
        check_plan_networks(Plan.from_dict(plan, Path("plan.json")), Path("plan.json"))
    assert wrong in caught.value.line() and "plan.json" in caught.value.line()


def test_a_plan_network_must_be_a_registered_model():
    from amoseg.models.registry import check_plan_networks

    plan = good_plan()
    check_plan_networks(Plan.from_dict(plan))
    plan["configurations"]["2d"]["network"] = {"class": "unet9"}
    with pytest.raises(AmosegError, match=r"configurations\.2d\.network\.class") as caught:
        check_plan_networks(Plan.from_dict(plan, Path("plan.json")), Path("plan.json"))
    assert "plan.json" in caught.value.line()


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, 0.0, 1e6])
def test_memory_budget_is_finite_positive_and_capped(value):
    with pytest.raises(AmosegError, match="--memory-gb"):
        check_memory_gb(value)
    assert check_memory_gb(8) == 8.0


def test_resampled_volume_is_capped_before_allocation():
    """A 512×512×400 CT at 0.8 mm to 0.05 mm would be ~8e11 voxels (3 TB as float32): refused
    by arithmetic on shapes; the input here is a broadcast view that owns one voxel."""
    image = torch.zeros(1, 1, 1, dtype=torch.int16).expand(512, 512, 400)
    affine = torch.diag(torch.tensor([0.8, 0.8, 1.0, 1.0])).numpy()
    fine = Preprocessor(spacing=(0.05, 0.05, 0.05))
    with pytest.raises(AmosegError, match=f"cap of {MAX_RESAMPLED_VOXELS}"):
        fine.plan_record(image, affine, (512, 512, 400))
    record = Preprocessor(spacing=(0.8, 0.8, 1.0)).plan_record(image, affine, (512, 512, 400))
    assert record.shape == (512, 512, 400)


@FUZZ
@given(edit=st.tuples(st.sampled_from(["top", "2d", "network"]), st.text(max_size=20), JSON))
def test_fuzzed_plan_is_a_plan_or_one_plan_error(edit):
    """Any value at any key (known or not): a Plan, or a PlanError; nothing else escapes."""
    where, key, value = edit
    plan = good_plan()
    config = plan["configurations"]["2d"]
    known = {"top": list(plan), "2d": list(config), "network": ["class", "args"]}[where]
    key = known[len(key) % len(known)] if key[:1] != "x" else key
    target = {"top": plan, "2d": config, "network": config["network"]}[where]
    target[key] = value
    try:
        Plan.from_dict(json.loads(json.dumps(plan)), Path("plan.json"))
    except PlanError as exc:
        assert "\n" not in exc.line()


# --- postprocessing.json -------------------------------------------------------------------


@pytest.mark.parametrize(
    "doc",
    [[6], "x", None, {}, {"lcc_organs": "liver"}, {"lcc_organs": {"6": True}},
     {"lcc_organs": [0]}, {"lcc_organs": [16]}, {"lcc_organs": [-1]}, {"lcc_organs": [1.5]},
     {"lcc_organs": [True]}, {"lcc_organs": ["6"]}, {"lcc_organs": [None]}],
)  # fmt: skip
def test_a_damaged_choice_is_refused(doc):
    with pytest.raises(AmosegError, match=r"postprocessing\.json"):
        check_postprocessing(doc, Path("run/postprocessing.json"))


def test_a_valid_choice_is_read():
    assert check_postprocessing({"lcc_organs": [6, 1, 6], "rule": "x"}, "p.json") == [1, 6]
    assert check_postprocessing({"lcc_organs": []}, "p.json") == []


@FUZZ
@given(doc=JSON)
def test_fuzzed_choice_is_organ_ids_or_one_error(doc):
    try:
        organs = check_postprocessing(doc, "postprocessing.json")
    except AmosegError as exc:
        assert "postprocessing.json" in exc.line()
    else:
        assert all(isinstance(o, int) and 1 <= o <= 15 for o in organs)


def test_every_run_is_checked_and_a_huge_file_is_not_read(tmp_path):
    a, b, c = (tmp_path / n for n in "abc")
    for run in (a, b, c):
        run.mkdir()
    (a / "postprocessing.json").write_text('{"lcc_organs": [1, 6]}')
    (b / "postprocessing.json").write_text('{"lcc_organs": [6, 7]}')
    assert saved_lcc_organs([a, b]) == [6]
    assert saved_lcc_organs([c, a]) is None  # one run without a choice: no common choice
    (b / "postprocessing.json").write_text('{"lcc_organs": [99]}')
    with pytest.raises(AmosegError, match=r"postprocessing\.json"):
        saved_lcc_organs([c, b])  # checked even where another run has no choice
    with open(a / "postprocessing.json", "wb") as fh:
        fh.truncate(MAX_POSTPROCESSING_BYTES + 1)
    with pytest.raises(AmosegError, match="more than"):
        read_postprocessing(a / "postprocessing.json")


@settings(FUZZ, max_examples=100)
@given(data=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_fuzzed_files_are_read_or_refused_in_one_line(tmp_path, data):
    """Whole files of random bytes or random JSON: plan.json and postprocessing.json."""
    from amoseg.planning import load_plan

    for name, read in (("plan.json", load_plan), ("postprocessing.json", read_postprocessing)):
        path = tmp_path / name
        path.write_bytes(data)
        try:
            read(path)
        except AmosegError as exc:
            assert "\n" not in exc.line() and name in exc.line()
