"""bench/curves.py's command line: marks, arms and the smoke settings (the smoke run itself
takes minutes with nnU-Net; docs/benchmarks.md records it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import curves


def test_marks_default_to_5_10_20_30_60_within_the_budget(tmp_path):
    setup, resume, _ = curves.parse(["--out", str(tmp_path)])
    assert resume is False
    assert setup.marks == (5.0, 10.0, 20.0, 30.0, 60.0) and setup.budget_min == 60
    setup, resume, _ = curves.parse(["--out", str(tmp_path), "--budget-min", "20", "--resume"])
    assert resume is True
    assert setup.marks == (5.0, 10.0, 20.0)
    setup, _, _ = curves.parse(["--out", str(tmp_path), "--smoke"])
    assert setup.budget_min == 0.2 and setup.marks == (0.1, 0.2) and setup.preset == "demo"
    assert setup.lowres_spacing == 6.0 and setup.hparams == {"base": 8}
    assert set(setup.arms) == set(curves.ARMS)


@pytest.mark.parametrize(
    "args", [["--marks", "5,90"], ["--arms", "amoseg-4d"], ["--cases", "4", "--test-cases", "3"]]
)
def test_bad_arguments_exit_2(tmp_path, args):
    with pytest.raises(SystemExit) as info:
        curves.parse(["--out", str(tmp_path), "--budget-min", "60", *args])
    assert info.value.code == 2


def test_cascade_clock_splits_the_budget_between_the_folds_and_the_stage():
    # the 3d_lowres store's folds: the last one has no validation cases (4 labelled cases)
    splits = {"folds": [{"train": ["b"], "val": ["a"]}, {"train": ["a"], "val": ["b"]},
                        {"train": ["a", "b"], "val": []}]}  # fmt: skip
    assert curves.lowres_folds(splits) == [0, 1]
    assert curves.lowres_folds({"train": ["a"]}) == []
    plan = curves.cascade_budgets(60.0, 1 / 3, 5)
    assert plan["fold_min"] == pytest.approx(4.0) and plan["stage_min"] == pytest.approx(40.0)
    # the folds took 21 min (each overran by 12 s): the stage gets the 39 left
    assert curves.stage_budget(60.0, 21.0) == pytest.approx(39.0)
    assert curves.stage_budget(0.2, 0.5) == pytest.approx(0.01)  # overran it all: 5 %
    # the arm's marks on the stage's clock: those within the folds' 21 minutes have none
    marks = curves.stage_marks((5.0, 10.0, 20.0, 30.0, 60.0), 21.0)
    assert [t for t, _ in marks] == ["m30", "m60"]
    assert [at for _, at in marks] == pytest.approx([9.0, 39.0])


def test_cascade_snapshot_carries_the_previous_stage_and_the_arm_clock(tmp_path):
    run = tmp_path / "run"
    (run / "previous" / "fold_0").mkdir(parents=True)
    (run / "previous" / "fold_0" / "checkpoint_best.pt").write_bytes(b"low")
    (run / "config.json").write_text("{}")
    (run / "checkpoint_latest.pt").write_bytes(b"latest")
    curves.keep_snapshot(run, tmp_path / "m30", 9.25, 7, offset_min=21.0)
    snap = tmp_path / "m30"
    assert (snap / "checkpoint_best.pt").read_bytes() == b"latest"
    assert (snap / "previous" / "fold_0" / "checkpoint_best.pt").read_bytes() == b"low"
    assert json.loads((snap / "mark.json").read_text()) == {
        "clock_min": 30.25, "epoch": 7, "stage_clock_min": 9.25}  # fmt: skip


@pytest.mark.parametrize("share", ["0", "1", "1.5"])
def test_cascade_share_must_leave_both_stages_time(tmp_path, share):
    with pytest.raises(SystemExit) as info:
        curves.parse(["--out", str(tmp_path), "--cascade-lowres-share", share])
    assert info.value.code == 2
    setup, _, _ = curves.parse(["--out", str(tmp_path), "--cascade-lowres-share", "0.25"])
    assert setup.cascade_share == 0.25


def test_score_marks_are_among_the_marks_and_leave_the_rest_for_later(tmp_path):
    setup, _, _ = curves.parse(["--out", str(tmp_path), "--budget-min", "20", "--marks",
                                "5,10,20", "--score-marks", "20"])  # fmt: skip
    assert setup.score_marks == (20.0,) and setup.scored(20.0) and not setup.scored(5.0)
    assert curves.not_scored(5.0)["mean_dice"] is None
    with pytest.raises(SystemExit) as info:
        curves.parse(["--out", str(tmp_path), "--marks", "5,10", "--score-marks", "30"])
    assert info.value.code == 2
    everything, _, _ = curves.parse(["--out", str(tmp_path)])
    assert everything.score_marks is None and everything.scored(60.0)
