"""nnU-Net v2 model folders in amoseg without nnU-Net: safe checkpoint loading, AMOS names,
`amoseg predict MODEL_DIR`, `amoseg.load(MODEL_DIR)` and ensembles with amoseg's own runs.
(Parity with nnU-Net itself: tests/test_nnunet_parity.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from amoseg.errors import AmosegError
from tests.nnunet_tiny_folder import make_model_folder

REPO = Path(__file__).resolve().parents[1]

# totalsegmentator 2.18.0, totalsegmentator/map_to_binary.py, class_map["total"] (ids 1-68 of
# 117; the rest are bones, muscles and vessels outside AMOS)
TOTALSEG_TOTAL = [
    "background", "spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach",
    "pancreas", "adrenal_gland_right", "adrenal_gland_left", "lung_upper_lobe_left",
    "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
    "lung_lower_lobe_right", "esophagus", "trachea", "thyroid_gland", "small_bowel", "duodenum",
    "colon", "urinary_bladder", "prostate", "kidney_cyst_left", "kidney_cyst_right", "sacrum",
    "vertebrae_S1", "vertebrae_L5", "vertebrae_L4", "vertebrae_L3", "vertebrae_L2",
    "vertebrae_L1", "vertebrae_T12", "vertebrae_T11", "vertebrae_T10", "vertebrae_T9",
    "vertebrae_T8", "vertebrae_T7", "vertebrae_T6", "vertebrae_T5", "vertebrae_T4",
    "vertebrae_T3", "vertebrae_T2", "vertebrae_T1", "vertebrae_C7", "vertebrae_C6",
    "vertebrae_C5", "vertebrae_C4", "vertebrae_C3", "vertebrae_C2", "vertebrae_C1", "heart",
    "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery_right",
    "subclavian_artery_left", "common_carotid_artery_right", "common_carotid_artery_left",
    "brachiocephalic_vein_left", "brachiocephalic_vein_right", "atrial_appendage_left",
    "superior_vena_cava", "inferior_vena_cava", "portal_vein_and_splenic_vein",
    "iliac_artery_left", "iliac_artery_right", "iliac_vena_left", "iliac_vena_right",
]  # fmt: skip
# mrsegmentator 2.0.0, its README's class table (the package's PyPI description)
MRSEG = [
    "background", "spleen", "right_kidney", "left_kidney", "gallbladder", "liver", "stomach",
    "pancreas", "right_adrenal_gland", "left_adrenal_gland", "left_lung", "right_lung", "heart",
    "aorta", "inferior_vena_cava", "portal_vein_and_splenic_vein", "left_iliac_artery",
    "right_iliac_artery", "left_iliac_vena", "right_iliac_vena", "esophagus", "small_bowel",
    "duodenum", "colon", "urinary_bladder", "spine", "sacrum", "left_hip", "right_hip",
    "left_femur", "right_femur", "left_autochthonous_muscle", "right_autochthonous_muscle",
    "left_iliopsoas_muscle", "right_iliopsoas_muscle", "left_gluteus_maximus",
    "right_gluteus_maximus", "left_gluteus_medius", "right_gluteus_medius",
    "left_gluteus_minimus", "right_gluteus_minimus",
]  # fmt: skip


def test_totalsegmentator_and_mrsegmentator_names_map_onto_amos():
    from amoseg.nnunet_models.names import amos_mapping, covered_organs

    ts = amos_mapping(dict(enumerate(TOTALSEG_TOTAL)))
    by_name = dict(zip(TOTALSEG_TOTAL, ts, strict=True))
    assert by_name["kidney_left"] == 3 and by_name["kidney_right"] == 2
    assert by_name["adrenal_gland_right"] == 11 and by_name["adrenal_gland_left"] == 12
    assert by_name["inferior_vena_cava"] == 9 and by_name["aorta"] == 8
    assert by_name["urinary_bladder"] == 14 and by_name["prostate"] == 15
    assert by_name["gallbladder"] == 4 and by_name["esophagus"] == 5
    for other in (
        "colon",
        "kidney_cyst_left",
        "superior_vena_cava",
        "portal_vein_and_splenic_vein",
    ):
        assert by_name[other] == 0, other
    assert covered_organs(ts) == frozenset(range(1, 16))

    mr = amos_mapping(dict(enumerate(MRSEG)))
    mr_by_name = dict(zip(MRSEG, mr, strict=True))
    assert mr_by_name["right_kidney"] == 2 and mr_by_name["left_adrenal_gland"] == 12
    assert mr_by_name["duodenum"] == 13 and mr_by_name["left_iliac_vena"] == 0
    assert covered_organs(mr) == frozenset(range(1, 15))  # no prostate/uterus


def test_own_ids_and_names_override_the_mapping():
    from amoseg.nnunet_models.names import amos_mapping

    mapped = amos_mapping(
        {0: "background", 1: "organ_a", 2: "organ_b"}, {"organ_a": 6, "2": "bladder"}
    )
    assert mapped == [0, 6, 14]
    with pytest.raises(AmosegError, match="no class 'nope'"):
        amos_mapping({0: "background"}, {"nope": 1})
    with pytest.raises(AmosegError, match="not an AMOS class"):
        amos_mapping({0: "background", 1: "x"}, {"x": "colon"})


def test_checkpoint_with_numpy_scalars_loads_and_other_globals_are_refused(tmp_path):
    from amoseg.nnunet_models.checkpoint import load_checkpoint

    folder = make_model_folder(tmp_path, MRSEG[:5])
    checkpoint = load_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    assert isinstance(checkpoint["_best_ema"], np.float64)
    assert isinstance(checkpoint["logging"]["mean_fg_dice"][0], np.float32)
    bad = tmp_path / "bad.pth"
    torch.save({"network_weights": {}, "hook": os.system}, bad)
    with pytest.raises(AmosegError) as info:
        load_checkpoint(bad)
    assert "global" in info.value.line() and "system" in info.value.line()
    assert "\n" not in info.value.line()


def scan(path: Path, shape=(40, 36, 12), spacing=(4.0, 4.0, 6.0)) -> Path:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 400, size=shape).astype(np.int16)
    data[:4] = 0  # outside the field of view: nnU-Net crops it away
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), path)
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "amoseg", *args], capture_output=True, text=True, env=env
    )


def test_predict_cli_writes_labels_and_marks_organs_not_covered(tmp_path):
    folder = make_model_folder(tmp_path, MRSEG, folds=(0, 1))
    image = scan(tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    proc = run_cli("predict", str(folder), str(image), "-o", str(out), "--step-size", "0.8",
                   "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "not covered by the model (no volumes): prostate/uterus" in proc.stderr
    seg = nib.load(out / "ct_seg.nii.gz")
    assert seg.shape == (40, 36, 12)
    labels = np.asanyarray(seg.dataobj)
    assert labels.max() <= 14 and not labels[:4].any()  # cropped-away border is background
    rows = {r["label"]: r for r in json.loads((out / "ct_volumes.json").read_text())["organs"]}
    assert rows[15]["covered"] is False and rows[15]["volume_ml"] is None
    assert rows[6]["covered"] is True and rows[6]["volume_ml"] is not None


def test_predict_cli_refuses_a_checkpoint_with_foreign_globals_in_one_line(tmp_path):
    folder = make_model_folder(tmp_path, MRSEG[:3])
    path = folder / "fold_0" / "checkpoint_final.pth"
    torch.save({"network_weights": {}, "hook": os.system}, path)
    proc = run_cli("predict", str(folder), str(scan(tmp_path / "ct.nii.gz")), "-o",
                   str(tmp_path / "out"), "--device", "cpu")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "posix.system" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_plans_naming_code_outside_torch_nn_are_refused(tmp_path):
    from amoseg.nnunet_models import open_nnunet_model

    folder = make_model_folder(tmp_path, MRSEG[:3])
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["nonlin"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(AmosegError, match=r"outside torch\.nn"):
        open_nnunet_model(folder, device="cpu")


def test_api_load_segments_and_says_which_organs_are_covered(tmp_path, one_torch_thread):
    import amoseg

    folder = make_model_folder(tmp_path, TOTALSEG_TOTAL[:10])  # up to the left adrenal gland
    model = amoseg.load(folder, device="cpu")
    assert model.backend.covered == frozenset({1, 2, 3, 4, 6, 7, 10, 11, 12})
    result = model.segment(scan(tmp_path / "ct.nii.gz"), probabilities=True)
    assert result.label.shape == (40, 36, 12)
    assert result.probabilities.shape == (16, 40, 36, 12)
    np.testing.assert_allclose(result.probabilities.astype(np.float32).sum(0), 1.0, atol=1e-2)
    assert isinstance(result.volume_ml("liver"), float)
    with pytest.raises(AmosegError, match="not covered"):
        result.volume_ml("aorta")


def test_ensemble_mixes_an_nnunet_folder_with_an_amoseg_run(tmp_path, tiny_unet_run):
    from amoseg.inference.predict import scan_probabilities
    from amoseg.inference.segmenter import Segmenter, SegmentOptions

    folder = make_model_folder(tmp_path, MRSEG)
    backends = Segmenter.open([tiny_unet_run, folder], SegmentOptions(device="cpu")).backends
    assert len(backends) == 2
    image = nib.load(scan(tmp_path / "ct.nii.gz"))
    data = np.asanyarray(image.dataobj)
    probs = scan_probabilities(backends, data, image.affine)
    assert probs.shape == (16, *data.shape)
    np.testing.assert_allclose(probs.sum(0).numpy(), 1.0, atol=1e-4)
    alone = backends[1].scan_probabilities(data, image.affine)
    assert not torch.allclose(probs, alone)  # both members count


def test_evaluate_scores_an_nnunet_folder_on_native_grids(tmp_path, capsys):
    from amoseg.atomic import read_json
    from amoseg.cli.main import main
    from amoseg.data.synth import generate_dataset
    from amoseg.store.prepare import prepare_dataset

    generate_dataset(tmp_path / "amos", 4, 0, "demo", progress=False)
    store = tmp_path / "store"
    prepare_dataset(tmp_path / "amos", store, size=32, split=(0.5, 0.25, 0.25), progress=False)
    folder = make_model_folder(tmp_path, MRSEG)
    main(["evaluate", str(folder), "--data", str(store), "--split", "test", "--device", "cpu"])
    metrics = read_json(folder / "eval_ensemble_test" / "metrics.json")["native"]
    assert metrics["n_cases"] == 1
    assert metrics["covered_organs"] == list(range(1, 15))
    assert metrics["per_organ"]["prostate/uterus"]["covered"] is False
    assert metrics["per_organ"]["liver"]["covered"] is True
    assert "native grid" in capsys.readouterr().out


def test_models_lists_the_catalogue_with_organs_and_licences(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "AMOSEG_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "amoseg", "models"], capture_output=True,
                          text=True, env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("│")[1].strip(): line for line in proc.stdout.splitlines() if "│" in line}
    assert {"totalseg-total-3mm", "totalseg-total-6mm", "totalseg-organs-1.5mm",
            "mrsegmentator"} <= set(rows)  # fmt: skip
    assert "14/15" in rows["mrsegmentator"] and "prostate/uterus" in rows["mrsegmentator"]
    assert "15/15" in rows["totalseg-total-3mm"] and "Apache-2.0" in rows["totalseg-total-3mm"]
    assert not list(tmp_path.iterdir())  # listing writes nothing


def test_lowres_inherits_and_old_plans_format_builds_the_same_network(tmp_path):
    from amoseg.nnunet_models import open_nnunet_model
    from tests.nnunet_tiny_folder import ARCH_3D

    folder = make_model_folder(tmp_path, MRSEG[:4])
    plans = json.loads((folder / "plans.json").read_text())
    full = plans["configurations"]["3d_fullres"]
    plans["configurations"]["3d_lowres"] = {
        "inherits_from": "3d_fullres",
        "spacing": [8.0, 6.0, 6.0],
    }
    kw = ARCH_3D["arch_kwargs"]
    old = {k: v for k, v in full.items() if k != "architecture"}
    old.update(
        UNet_class_name="PlainConvUNet", UNet_base_num_features=4, unet_max_num_features=8,
        n_conv_per_stage_encoder=kw["n_conv_per_stage"],
        n_conv_per_stage_decoder=kw["n_conv_per_stage_decoder"],
        conv_kernel_sizes=kw["kernel_sizes"], pool_op_kernel_sizes=kw["strides"],
    )  # fmt: skip
    plans["configurations"]["3d_fullres"] = old  # nnU-Net's plans format before "architecture"
    (folder / "plans.json").write_text(json.dumps(plans))
    lowres = folder.with_name("nnUNetTrainer__nnUNetPlans__3d_lowres")
    folder.rename(lowres)
    backend = open_nnunet_model(lowres, device="cpu")  # the fold's weights load exactly
    image = nib.load(scan(tmp_path / "ct.nii.gz"))
    labels = backend.scan_labels(np.asanyarray(image.dataobj), image.affine)
    assert labels.shape == image.shape and backend._pre.spacing == [8.0, 6.0, 6.0]


def test_logit_resampling_chunks_change_memory_not_results(monkeypatch):
    """The chunk size of the probability resampling is picked from a memory budget (one slice
    at a time for a many-class model on a large grid); every chunking gives the same values."""
    import amoseg.nnunet_models.resample as rs

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 6, 6, generator=gen).to(torch.float16)
    target, current, new = (13, 11, 9), (3.0, 1.0, 1.0), (1.5, 0.6, 0.7)

    def whole(**kw):
        parts = list(rs.resample_logits_chunks(logits, target, current, new, **kw))
        return [s for s, _ in parts], torch.cat([c for _, c in parts], dim=1)

    starts8, ref = whole(chunk=8)
    assert starts8 == [0, 8] and ref.shape == (5, *target)
    for chunk in (1, 3):
        assert torch.equal(whole(chunk=chunk)[1], ref)
    monkeypatch.setattr(rs, "CHUNK_BYTES", 5 * 5 * 11 * 9 * 8 * 2)  # two slices' worth
    starts, values = whole()
    assert starts == list(range(0, 13, 2)) and torch.equal(values, ref)
