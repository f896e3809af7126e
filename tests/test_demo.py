"""demo: a miniature end-to-end run honours the interface contract and reuses finished stages."""

from __future__ import annotations

import csv
import json

import pytest

from amoseg.cli.main import main
from amoseg.models.registry import LADDER as MODEL_NAMES

MINI = ["--cases", "6", "--size", "32", "--epochs-scale", "0.01", "--max-slices", "16"]
MINI += ["--device", "cpu"]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    main(["demo", "--out", str(out), *MINI])
    return out


def _comparison_rows(out):
    (path,) = list(out.rglob("comparison.csv"))
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_contract_csv_and_one_run_folder_per_model(demo_dir):
    rows = _comparison_rows(demo_dir)
    assert {"model", "mIoU"} <= set(rows[0])
    assert sorted(r["model"] for r in rows) == sorted(MODEL_NAMES)
    for row in rows:
        assert 0.0 <= float(row["mIoU"]) <= 100.0
    run_names = [p.name for p in (demo_dir / "runs").iterdir() if p.is_dir()]
    for model in MODEL_NAMES:
        assert any(model in name for name in run_names), model
        assert (demo_dir / "runs" / model / "eval_test" / "overlay.png").exists()


def test_rerun_reuses_every_finished_stage(demo_dir, capsys):
    main(["demo", "--out", str(demo_dir), *MINI])
    timings = json.loads((demo_dir / "report" / "timings.json").read_text())
    stages = {k: v for k, v in timings["stages"].items() if k != "compare"}
    assert len(stages) == 2 + len(MODEL_NAMES)
    assert all(v["reused"] for v in stages.values()), stages
    assert "reused" in capsys.readouterr().out


def test_refuses_to_write_into_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(tmp_path), "--fresh", *MINI])
    assert exc.value.code == 2
    assert "not a demo folder" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").exists()


def test_mixed_demo_settings_leave_unet_normalisation_to_the_store():
    from amoseg.reports.demo import DemoOptions, model_settings

    ct = model_settings("unet", DemoOptions())
    mixed = model_settings("unet", DemoOptions(modality="mixed"))
    assert ct["hparams"]["norm"] == "window"  # the CT ladder keeps its HU window
    assert "norm" not in mixed["hparams"] and "window" not in mixed["hparams"]


@pytest.mark.slow
def test_mixed_demo_runs_the_mr_path(tmp_path):
    """`amoseg demo --modality mixed`: MR phantoms in the store, unet on per-image z-score."""
    from amoseg.atomic import read_json
    from amoseg.store.slice_store import SliceStore

    out = tmp_path / "mixed"
    main(["demo", "--out", str(out), *MINI, "--modality", "mixed"])
    store = SliceStore(out / "store")
    cases = [c for split in ("train", "val", "test") for c in store.cases(split)]
    assert any(store.meta(c)["modality"] == "mr" for c in cases)
    assert any(store.meta(c)["modality"] == "ct" for c in cases)
    config = read_json(out / "runs" / "unet" / "config.json")
    assert config["hparams"]["norm"] == "zscore" and config["store"]["synthetic"] is True
    assert len(_comparison_rows(out)) == len(MODEL_NAMES)


def test_threads_count_other_processes_not_the_demos_own_work():
    """One torch thread when another process holds a core; this process's own work (a
    test suite that runs the demo in-process) is not competition."""
    import subprocess
    import sys
    import threading
    import time

    from amoseg.reports.demo import busy_cores, cpu_threads

    spin = "import time\nt = time.time() + 2\nwhile time.time() < t: pass"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)
        other = busy_cores(0.6)
        threads_busy = cpu_threads(None)
    finally:
        child.wait()
    stop = time.time() + 1.0
    worker = threading.Thread(
        target=lambda: [None for _ in iter(lambda: time.time() < stop, False)]
    )
    worker.start()
    own = busy_cores(0.6)
    worker.join()
    assert other >= 0.75 and threads_busy == 1, other
    assert own <= other - 0.5, (own, other)
    assert cpu_threads(3) == 3
