"""compare: the comparison table is built from the runs' own files, and says what is missing."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from amoseg.atomic import write_json
from amoseg.cli.main import main
from amoseg.reports.compare import compare_runs
from amoseg.reports.evaluate import evaluate_run
from tests.test_evaluate import fake_training, make_run, make_store  # noqa: F401 (fixture)


@pytest.fixture
def runs(tmp_path, fake_training):  # noqa: F811
    store = make_store(tmp_path / "store")
    out = []
    for i, name in enumerate(("prior", "unet")):
        run = make_run(tmp_path / "runs" / name, store, model=name)
        write_json(
            run / "summary.json",
            {"n_params": 1000 * (i + 1), "train_seconds": 12.5 + i, "best_val_miou": 0.5},
        )
        write_json(run / "config.json", {"model": name, "settings": {"epochs": 3 + i}})
        out.append(run)
    # evaluate after rewriting config.json, passing the store explicitly
    metrics = [evaluate_run(r, store, progress=False) for r in out]
    return out, metrics


def test_csv_and_markdown_come_from_the_runs(tmp_path, runs):
    run_dirs, metrics = runs
    result = compare_runs(run_dirs, tmp_path / "report")
    with open(result["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["prior", "unet"]
    assert {"model", "mIoU", "accuracy", "dice", "params", "train_seconds", "slices_per_s"} <= set(
        rows[0]
    )
    for row, m in zip(rows, metrics, strict=True):
        assert float(row["mIoU"]) == pytest.approx(100 * m["miou"], abs=0.006)
        assert float(row["dice"]) == pytest.approx(100 * m["mean_dice"], abs=0.006)
    assert rows[1]["params"] == "2000" and rows[1]["epochs"] == "4"
    md = result["markdown"].read_text()
    assert "| prior |" in md and "| unet |" in md
    # the report's numbers are there, labelled as the report's and not ours
    assert "report's published numbers (real AMOS data, not ours)" in md
    assert "95.42" in md and "72.60" in md and "11.20" in md
    with Image.open(result["chart"]) as img:
        assert img.format == "PNG"


def test_unevaluated_run_names_the_command_to_run(tmp_path, runs, capsys):
    run_dirs, _ = runs
    bare = tmp_path / "runs" / "mlp"
    write_json(bare / "config.json", {"model": "mlp"})
    with pytest.raises(SystemExit) as exc:
        main(["compare", *map(str, run_dirs), str(bare), "-o", str(tmp_path / "report")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "has not been evaluated" in err and f"amoseg evaluate {bare}" in err
    assert not (tmp_path / "report" / "comparison.csv").exists()


def test_not_a_run_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        main(["compare", str(tmp_path / "empty"), "-o", str(tmp_path / "report")])
    assert "not a run folder" in capsys.readouterr().err


def test_cli_writes_all_three_files(tmp_path, runs, capsys):
    run_dirs, _ = runs
    main(["compare", *map(str, run_dirs), "-o", str(tmp_path / "report")])
    assert "unet" in capsys.readouterr().out
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert names == {"comparison.md", "comparison.csv", "comparison.png"}
