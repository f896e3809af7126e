"""bench/nnunet_models.py and bench/totalseg_model.py without running a tool (the smoke run
takes minutes with nnU-Net and TotalSegmentator): TotalSegmentator's layout and class names,
label agreement in AMOS ids, the parsing of each tool's own timings, the ratios and the table.
With `.venv-totalseg` present, the hand-written TotalSegmentator list of the label-map tests is
checked against the installed package's own class map."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import nnunet_models  # noqa: E402
import totalseg_model  # noqa: E402

from tests.test_nnunet_models import TOTALSEG_TOTAL  # noqa: E402

TS_PYTHON = REPO / ".venv-totalseg" / "bin" / "python"


@pytest.mark.skipif(not TS_PYTHON.exists(), reason="no .venv-totalseg (bench/nnunet_models.py)")
def test_hand_written_totalseg_names_are_the_installed_class_map_and_map_onto_amos():
    from amoseg.nnunet_models.names import amos_mapping, covered_organs

    installed = nnunet_models.totalseg_classes(REPO / ".venv-totalseg")
    assert sorted(installed) == list(range(1, 118))  # 117 classes, ids 1-117
    assert TOTALSEG_TOTAL[1:] == [installed[i] for i in range(1, len(TOTALSEG_TOTAL))]
    amos = amos_mapping({0: "background", **installed})
    assert covered_organs(amos) == frozenset(range(1, 16))
    # each AMOS organ from exactly one TotalSegmentator class
    assert sorted(a for a in amos if a) == list(range(1, 16))
    by_name = {installed[i]: amos[i] for i in installed}
    assert by_name["kidney_left"] == 3 and by_name["adrenal_gland_right"] == 11
    assert by_name["urinary_bladder"] == 14 and by_name["prostate"] == 15
    assert by_name["inferior_vena_cava"] == 9 and by_name["femur_left"] == 0


def test_the_totalseg_layout_is_where_its_2_18_code_looks(tmp_path):
    folder = totalseg_model.model_dir(tmp_path)
    assert folder.relative_to(tmp_path).parts == (
        "nnunet", "results", "Dataset297_TotalSegmentator_total_3mm_1559subj",
        "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres",
    )  # fmt: skip
    totalseg_model.write_config(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["send_usage_stats"] is False and config["statistics_disclaimer_shown"] is True


def amos_case(root: Path, shape=(12, 10, 4), spacing=(1.5, 1.5, 6.0)) -> None:
    """One AMOS-layout case: a left kidney (AMOS 3) and a bladder (AMOS 14) block."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    image = np.full(shape, 40, dtype=np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    label[:6, :, :2] = 3
    label[6:, :, 2:] = 14
    affine = np.diag([-spacing[0], spacing[1], spacing[2], 1.0])  # LPS-ish: flipped x
    nib.save(nib.Nifti1Image(image, affine), str(root / "imagesTr" / "amos_0001.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(root / "labelsTr" / "amos_0001.nii.gz"))
    spec = {
        "training": [
            {"image": "./imagesTr/amos_0001.nii.gz", "label": "./labelsTr/amos_0001.nii.gz"}
        ],
        "labels": {"0": "background", "3": "left kidney", "14": "bladder"},
    }
    (root / "dataset.json").write_text(json.dumps(spec))


def test_raw_dataset_is_3mm_canonical_with_totalseg_ids_by_name(tmp_path):
    amos_case(tmp_path / "amos")
    classes = dict(enumerate(TOTALSEG_TOTAL))
    del classes[0]
    out = totalseg_model.write_raw_dataset(tmp_path / "amos", tmp_path / "raw", classes)
    spec = json.loads((out / "dataset.json").read_text())
    assert spec["labels"]["background"] == 0 and spec["labels"]["kidney_left"] == 3
    assert spec["labels"]["urinary_bladder"] == 21 and len(spec["labels"]) == len(TOTALSEG_TOTAL)
    label = nib.load(str(out / "labelsTr" / "amos_0001.nii.gz"))
    assert np.allclose(label.header.get_zooms(), 3.0)
    assert nib.aff2axcodes(label.affine) == ("R", "A", "S")
    assert set(np.unique(np.asarray(label.dataobj))) == {0, 3, 21}  # AMOS 14 → TS 21
    image = nib.load(str(out / "imagesTr" / "amos_0001_0000.nii.gz"))
    assert image.shape == label.shape and np.allclose(image.affine, label.affine)


def test_agreement_counts_every_voxel_and_organ_voxels_apart():
    a = np.array([0, 0, 0, 0, 0, 0, 3, 3])
    b = np.array([0, 0, 0, 0, 0, 0, 3, 5])
    overall, fg = nnunet_models.agreement(a, b)
    assert overall == 7 / 8 and fg == 1 / 2
    assert nnunet_models.agreement(np.zeros(3), np.zeros(3)) == (1.0, None)
    with pytest.raises(ValueError, match="shape"):
        nnunet_models.agreement(np.zeros(3), np.zeros(4))


def test_model_ids_are_read_as_amos_ids_through_the_folder_names(tmp_path):
    labels = {name: i for i, name in enumerate(TOTALSEG_TOTAL)}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    table = nnunet_models.amos_table(tmp_path)
    seg = np.array([[[0, 3, 21, 22, 63, 51]]], dtype=np.uint8)  # heart (51) is no AMOS organ
    nib.save(nib.Nifti1Image(seg, np.eye(4)), str(tmp_path / "seg.nii.gz"))
    assert nnunet_models.read_amos(tmp_path / "seg.nii.gz", table).ravel().tolist() == [
        0, 3, 14, 15, 9, 0,
    ]  # fmt: skip


def test_each_tools_own_timings_are_parsed():
    ts = (
        "Resampling...\n  Resampled in 0.23s\nPredicting...\n  Predicted in 32.23s\n"
        "Resampling...\n  Resampled in 0.03s\nSaving segmentations...\n  Saved in 0.01s\n"
    )
    assert nnunet_models.totalseg_stage_seconds(ts) == {
        "resample_in": 0.23, "nnunet": 32.23, "resample_back": 0.03, "save": 0.01,
    }  # fmt: skip
    am = "/o/case_seg.nii.gz  12.5 s\n/o/case_volumes.csv\n/o/b_seg.nii.gz  3.0 s\n"
    assert nnunet_models.amoseg_scan_seconds(am) == [12.5, 3.0]


def test_tiles_follow_nnunets_steps_and_mirroring_multiplies_passes():
    assert nnunet_models.tiles([64, 48, 48], [64, 48, 48], 0.5) == 1
    assert nnunet_models.tiles([100, 48, 48], [64, 48, 48], 0.5) == 3  # ceil(36 / 32) + 1
    assert nnunet_models.tiles([100, 48, 48], [64, 48, 48], 0.8) == 2
    assert nnunet_models.tiles([5, 64, 64], [64, 64], 0.5) == 5  # 2d: one per slice
    est = {"mirror_axes": [0, 1, 2], "folds": 2, "patch": [64, 48, 48],
           "shapes": [[100, 48, 48]], "tile_seconds": {"fp32": 1.0, "bf16": 0.25}}  # fmt: skip
    assert nnunet_models.network_seconds(est, 0.5, False, False) == 6.0
    assert nnunet_models.network_seconds(est, 0.5, True, False) == 48.0
    assert nnunet_models.network_seconds(est, 0.5, False, True) == 1.5


def row(tool: str, arm: str, seconds: float, rss: float, mirroring: bool = False) -> dict:
    return {"model": "m", "tool": tool, "arm": arm, "mirroring": mirroring,
            "seconds_per_case": seconds, "peak_rss_mib": rss,
            "load_before": [0.5, 0, 0], "load_after": [1.0, 0, 0]}  # fmt: skip


def test_ratios_compare_with_the_same_mirroring_and_the_table_shows_them():
    rows = [
        row("nnU-Net", "fp32", 100, 4000),
        row("amoseg", "fp32", 50, 1000),
        row("nnU-Net", "tta", 800, 4000, True),
        row("amoseg", "tta", 200, 1000, True),
        row("amoseg", "bf16", 20, 900),
        row("TotalSegmentator", "--fast", 40, 2000),
    ]
    nnunet_models.add_ratios(rows)
    am, am_tta, bf16, ts = rows[1], rows[3], rows[4], rows[5]
    assert am["speed_vs_nnunet"] == 2.0 and am["ram_vs_nnunet"] == 0.25
    assert am_tta["speed_vs_nnunet"] == 4.0 and "speed_vs_totalseg" not in am_tta
    assert bf16["speed_vs_nnunet"] == 5.0 and bf16["speed_vs_totalseg"] == 2.0
    assert ts["speed_vs_nnunet"] == 2.5 and "speed_vs_totalseg" not in ts
    text = nnunet_models.markdown({"machine": "x", "date": "d", "threads": 1, "rows": rows})
    line = next(line for line in text.splitlines() if "| bf16 |" in line)
    assert "| 5.00× | 2.00× | 0.23 | 0.45 |" in line and "0.50 → 1.00" in line
