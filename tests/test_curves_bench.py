"""bench/curves.py's command line: marks, arms and the smoke settings (the smoke run itself
takes minutes with nnU-Net; docs/benchmarks.md records it)."""

from __future__ import annotations

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
