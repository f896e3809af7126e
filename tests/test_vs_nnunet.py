"""bench/vs_nnunet.py --smoke end to end: nnU-Net 2d + 3d_fullres and amoseg on the same cases.

Needs nnU-Net's own environment `.venv-nnunet` (created by the bench itself, or by `.ci/run`
before the suite). Without it the test skips locally; in CI (env CI set) it fails, because CI
must check that the benchmark runs.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nnunet_made import REPO, need_nnunet


def torch_threads() -> int:
    """The suite's thread budget (one per pytest worker), for both tools in the bench."""
    import torch

    return torch.get_num_threads()


@pytest.fixture(scope="module")
def nnunet_venv() -> Path:
    return need_nnunet("nnUNetv2_train")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_smoke_benchmark_trains_predicts_and_scores_both_tools(nnunet_venv, tmp_path):
    out = tmp_path / "vs"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "vs_nnunet.py"),
            "--smoke",
            "--out",
            str(out),
            "--threads",
            str(torch_threads()),
        ],
        capture_output=True,
        text=True,
        timeout=1740,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "vs_nnunet.json").read_text())
    rows = {(r["tool"], r["configuration"]): r for r in result["rows"]}
    assert {("nnU-Net", "2d"), ("nnU-Net", "3d_fullres"), ("amoseg", "unet")} <= set(rows)
    for key, row in rows.items():
        assert row["train_s"] > 0 and row["epochs"] >= 1, key
        assert row["predict_s_per_case"] > 0, key
        assert row["peak_ram_mib"] > 50, key
        assert 0.0 <= row["mean_dice"] <= 1.0 and not math.isnan(row["mean_nsd"]), key
        assert len(row["per_organ_dice"]) == 15, key
        # the budget holds: 6 s here; the loop may finish the epoch it started
        assert row["train_s"] < 3 * result["plan"]["budget_s"] + 30, key
    for conf in ("2d", "3d_fullres"):
        assert rows[("nnU-Net", conf)]["predict_s_per_case_mirroring"] > 0
    assert rows[("amoseg", "unet")]["predict_s_per_case_mirroring"] is None
    check = result["scorer_check"]
    assert check["organs_compared"] >= 1 and check["agree"], check
    table = (out / "vs_nnunet.md").read_text()
    assert "nnU-Net 2d" in table and "nnU-Net 3d_fullres" in table and "amoseg unet" in table
    # the test images went to nnU-Net under its own naming; training cases never include them
    splits = result["data"]["splits"]
    raw = out / "nnunet" / "nnUNet_raw" / "Dataset501_AmosegBench"
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == [
        f"{c}_0000.nii.gz" for c in splits["test"]
    ]
    trained = {p.name.removesuffix(".nii.gz") for p in (raw / "labelsTr").iterdir()}
    assert trained == set(splits["train"] + splits["val"])
    assert not trained & set(splits["test"])


def _bench():
    import importlib.util

    spec = importlib.util.spec_from_file_location("vs_nnunet", REPO / "bench" / "vs_nnunet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["vs_nnunet"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_nnunet_raw_layout_holds_train_and_val_cases_and_only_test_images(tmp_path):
    import nibabel as nib
    import numpy as np

    from amoseg.data.amos import AmosCase

    bench = _bench()
    by_id = {}
    for i, case_id in enumerate(("amos_0001", "amos_0002", "amos_0003", "amos_0004")):
        image = tmp_path / "src" / f"{case_id}.nii"  # uncompressed: must come out .nii.gz
        label = tmp_path / "src" / f"{case_id}_label.nii.gz"
        image.parent.mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(np.full((6, 5, 4), i, np.int16), np.eye(4)), str(image))
        nib.save(nib.Nifti1Image(np.full((6, 5, 4), i, np.uint8), np.eye(4)), str(label))
        by_id[case_id] = AmosCase(case_id, image, label, "ct")
    splits = {"train": ["amos_0001", "amos_0002"], "val": ["amos_0003"], "test": ["amos_0004"]}
    raw = bench.write_nnunet_raw(by_id, splits, tmp_path / "Dataset501_AmosegBench")
    spec = json.loads((raw / "dataset.json").read_text())
    assert spec["channel_names"] == {"0": "CT"} and spec["file_ending"] == ".nii.gz"
    assert spec["numTraining"] == 3 and spec["labels"]["background"] == 0
    assert sorted(spec["labels"].values()) == list(range(16))
    assert sorted(p.name for p in (raw / "imagesTr").iterdir()) == [
        "amos_0001_0000.nii.gz",
        "amos_0002_0000.nii.gz",
        "amos_0003_0000.nii.gz",
    ]
    assert sorted(p.name for p in (raw / "imagesTs").iterdir()) == ["amos_0004_0000.nii.gz"]
    label = nib.load(str(raw / "labelsTr" / "amos_0002.nii.gz"))
    assert np.asarray(label.dataobj).max() == 1 and np.allclose(label.affine, np.eye(4))


def test_bad_options_and_a_foreign_out_folder_are_one_line_errors(tmp_path):
    bench = _bench()
    with pytest.raises(bench.AmosegError, match="--cases"):
        bench.parse_plan(["--cases", "3"])
    with pytest.raises(bench.AmosegError, match="--budget-min"):
        bench.parse_plan(["--budget-min", "0"])
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(bench.AmosegError, match="not empty"):
        bench.claim_out(bench.parse_plan(["--out", str(tmp_path)]), overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "user data"
