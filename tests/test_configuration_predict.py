"""bench/configuration_predict.py's arguments and its table (the timings themselves are a
benchmark, run alone: docs/benchmarks.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "bench"))
    spec = importlib.util.spec_from_file_location(
        "configuration_predict", REPO / "bench" / "configuration_predict.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_runs_are_named_folders_that_exist(bench, tmp_path):
    args = bench.parse(["--out", str(tmp_path), "--run", f"3d_lowres={tmp_path}"])
    assert args.runs == {"3d_lowres": tmp_path}
    for bad in ([], ["--run", str(tmp_path)], ["--run", f"x={tmp_path / 'missing'}"],
                ["--run", f"x={tmp_path}", "--repeats", "0"]):  # fmt: skip
        with pytest.raises(SystemExit) as info:
            bench.parse(["--out", str(tmp_path), *bad])
        assert info.value.code == 2


def test_the_goal_is_judged_on_seconds_and_the_ratio(bench):
    def row(tool, conf, seconds, ratio=None):
        return {"tool": tool, "configuration": conf, "seconds": seconds, "peak_rss_mib": 900.0,
                "in_pipeline_seconds": seconds / 2, "nnunet_2d_over_this": ratio,
                "load_before": [1.0], "load_after": [1.1]}  # fmt: skip

    result = {"machine": "m", "date": "d", "scan_shape": [512, 512, 100], "threads": 2,
              "smoke": False}  # fmt: skip
    met = bench.markdown({**result, "rows": [row("amoseg", "3d_lowres", 4.0, 90.0),
                                             row("nnU-Net", "2d", 360.0)]})  # fmt: skip
    assert "met" in met and "missed" not in met
    slow = bench.markdown({**result, "rows": [row("amoseg", "3d_lowres", 8.0, 45.0),
                                              row("nnU-Net", "2d", 360.0)]})  # fmt: skip
    few = bench.markdown({**result, "rows": [row("amoseg", "3d_lowres", 4.0, 20.0),
                                             row("nnU-Net", "2d", 80.0)]})  # fmt: skip
    assert "missed" in slow and "missed" in few
    assert "| nnU-Net | 2d | 360.0 |" in met
