"""nnU-Net v2's cascade (3d_lowres, then 3d_cascade_fullres reading its labels) in amoseg.

Parity: tiny random-weight 3d_lowres + 3d_cascade_fullres folders planned by nnU-Net's own
planner (`-gpu_memory_target 0.3` makes its rule plan a low-resolution stage on tiny phantoms)
and saved by nnU-Net's trainer; the same scan predicted by `nnUNetv2_predict -c 3d_lowres` then
`-c 3d_cascade_fullres -prev_stage_predictions` and by amoseg (fp32, step 0.5, no mirroring)
must agree. Without `.venv-nnunet` those tests skip locally; in CI (env CI set) they fail.
The wiring and the one-line errors are tested on folders written without nnU-Net.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from amoseg.errors import AmosegError
from tests.nnunet_made import REPO, VENV_NNUNET, cut_out_scan, make_nnunet_models, need_nnunet
from tests.nnunet_tiny_folder import ARCH_3D, make_model_folder

DATASET = 778
LABELS = ["background", "liver", "spleen", "left_kidney"]
FOLDER = "nnUNetTrainer__nnUNetPlans__{}"


def run_amoseg(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "amoseg", *args], capture_output=True, text=True, env=env
    )


# --- folders written without nnU-Net: wiring and errors ------------------------------------


def make_cascade(root: Path, labels: list[str] = LABELS, folds=(0,)) -> tuple[Path, Path]:
    """root/Dataset999_Tiny/{…__3d_lowres, …__3d_cascade_fullres} in nnU-Net's plans format:
    3d_lowres at a coarser spacing, the cascade reading the image + one channel per label."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    low = make_model_folder(root / "low", labels, folds)
    plans = json.loads((low / "plans.json").read_text())
    confs = plans["configurations"]
    confs["3d_lowres"] = {
        **confs["3d_fullres"], "spacing": [9.0, 6.0, 6.0], "next_stage": "3d_cascade_fullres",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0,
                                     "force_separate_z": None},
    }  # fmt: skip
    confs["3d_fullres"].update(
        {k: v for k, v in confs["3d_lowres"].items() if k.startswith("resampling_fn_seg")}
    )
    confs["3d_cascade_fullres"] = {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}
    results = root / "Dataset999_Tiny"
    results.mkdir()
    lowres = results / FOLDER.format("3d_lowres")
    low.rename(lowres)
    cascade = results / FOLDER.format("3d_cascade_fullres")
    shutil.copytree(lowres, cascade)
    for folder in (lowres, cascade):
        (folder / "plans.json").write_text(json.dumps(plans))
    kwargs = dict(ARCH_3D["arch_kwargs"])
    kwargs.update(
        conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU
    )
    for fold in folds:
        torch.manual_seed(100 + fold)
        net = PlainConvUNet(len(labels), num_classes=len(labels), deep_supervision=False, **kwargs)
        path = cascade / f"fold_{fold}" / "checkpoint_final.pth"
        checkpoint = torch.load(path, weights_only=False)
        checkpoint["network_weights"] = net.state_dict()
        torch.save(checkpoint, path)
    return lowres, cascade


def scan(path: Path, shape=(40, 36, 12), spacing=(4.0, 4.0, 6.0)) -> Path:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 400, size=shape).astype(np.int16)
    data[:4] = 0  # outside the field of view: nnU-Net crops it away
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), path)
    return path


def test_cascade_runs_its_lowres_stage_found_beside_it_or_named(tmp_path, one_torch_thread):
    from amoseg.nnunet_models import open_nnunet_model

    lowres, cascade = make_cascade(tmp_path)
    image = nib.load(scan(tmp_path / "ct.nii.gz"))
    data = np.asanyarray(image.dataobj)
    backend = open_nnunet_model(cascade, device="cpu", precision="fp32")
    assert backend.previous is not None and backend.previous.folder.path == lowres
    labels, probs = backend.scan_outputs(data, image.affine, "model")
    assert labels.shape == data.shape and probs.shape == (len(LABELS), *data.shape)
    # the low-resolution labels are an input: other labels, other output
    moved = tmp_path / "elsewhere" / "my_lowres"
    shutil.copytree(lowres, moved)
    low = torch.load(moved / "fold_0" / "checkpoint_final.pth", weights_only=False)
    for value in low["network_weights"].values():
        value.mul_(-1.0)
    torch.save(low, moved / "fold_0" / "checkpoint_final.pth")
    shutil.rmtree(lowres)
    other = open_nnunet_model(cascade, device="cpu", precision="fp32", previous_stage=moved)
    assert other.previous is not None and other.previous.folder.path == moved
    assert not np.array_equal(other.scan_outputs(data, image.affine, "model")[0], labels)


def test_cli_predicts_a_cascade_folder(tmp_path):
    _, cascade = make_cascade(tmp_path)
    out = tmp_path / "out"
    proc = run_amoseg("predict", str(cascade), str(scan(tmp_path / "ct.nii.gz")), "-o", str(out),
                      "--step-size", "0.8", "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert nib.load(out / "ct_seg.nii.gz").shape == (40, 36, 12)


def test_a_missing_lowres_stage_is_one_line_and_exit_2(tmp_path):
    from amoseg.nnunet_models import open_nnunet_model

    lowres, cascade = make_cascade(tmp_path)
    shutil.rmtree(lowres)
    with pytest.raises(AmosegError, match="needs its 3d_lowres stage; no model folder") as info:
        open_nnunet_model(cascade, device="cpu")
    assert str(lowres) in info.value.line() and "previous_stage=" in info.value.line()
    out = tmp_path / "out"
    proc = run_amoseg("predict", str(cascade), str(scan(tmp_path / "ct.nii.gz")), "-o", str(out),
                      "--device", "cpu")  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "3d_lowres stage" in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_lowres_folds_and_labels_must_match_the_cascade(tmp_path):
    from amoseg.nnunet_models import open_nnunet_model

    lowres, cascade = make_cascade(tmp_path, folds=(0, 1))
    shutil.rmtree(lowres / "fold_1")
    with pytest.raises(AmosegError, match="3d_lowres stage has no fold 1") as info:
        open_nnunet_model(cascade, device="cpu")
    assert "\n" not in info.value.line()
    open_nnunet_model(cascade, device="cpu", folds=["0"])  # the folds both have
    dataset = json.loads((lowres / "dataset.json").read_text())
    dataset["labels"] = {name: i for i, name in enumerate([*LABELS[:3], "pancreas"])}
    (lowres / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(AmosegError, match="labels differ from the cascade's"):
        open_nnunet_model(cascade, device="cpu", folds=["0"])
    with pytest.raises(AmosegError, match="not the 3d_lowres stage"):
        open_nnunet_model(cascade, device="cpu", folds=["0"], previous_stage=cascade)
    with pytest.raises(AmosegError, match="no cascade stage"):
        open_nnunet_model(lowres, device="cpu", folds=["0"], previous_stage=lowres)


# --- against nnU-Net 2.8.1 itself ----------------------------------------------------------

RESAMPLE_IN_NNUNET = """
import json, sys
import numpy as np
from nnunetv2.preprocessing.resampling.default_resampling import resample_data_or_seg_to_shape
segs, spec = np.load(sys.argv[1]), json.load(open(sys.argv[2]))
out = {name: resample_data_or_seg_to_shape(segs[name][None].astype(np.float32), *spec[name],
       is_seg=True, order=1, order_z=0, force_separate_z=None)[0] for name in spec}
np.savez(sys.argv[3], **out)
"""


def test_segmentation_resampling_is_nnunets(tmp_path):
    """Label maps with -1 (outside), halved axes (exact ties), an anisotropic grid (per slice,
    nearest along z): the same labels as nnU-Net's resample_data_or_seg_to_shape."""
    from amoseg.nnunet_models.cascade import resample_segmentation

    python = need_nnunet() / "bin" / "python"
    rng = np.random.default_rng(5)
    blocks = rng.integers(-1, 5, size=(5, 6, 7)).repeat(2, 0).repeat(2, 1).repeat(3, 2)
    segs = {"blocks": blocks, "noise": rng.integers(0, 4, size=(9, 11, 10))}
    spec = {  # name: (new shape, current spacing, new spacing)
        "blocks/up": ((20, 24, 42), (2.0, 2.0, 2.0), (1.0, 1.0, 1.0)),
        "blocks/halve": ((5, 6, 7), (1.0, 1.0, 1.0), (2.0, 2.0, 3.0)),
        "blocks/down": ((7, 9, 13), (1.0, 1.2, 1.0), (1.43, 1.6, 2.3)),
        "blocks/aniso": ((16, 30, 35), (8.0, 2.0, 2.0), (6.2, 1.6, 1.2)),
        "noise/up": ((13, 15, 17), (3.0, 3.0, 3.0), (2.1, 2.2, 1.8)),
    }
    np.savez(tmp_path / "segs.npz", **{n: segs[n.split("/")[0]] for n in spec})
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    (tmp_path / "r.py").write_text(RESAMPLE_IN_NNUNET)
    proc = subprocess.run(
        [str(python), str(tmp_path / "r.py"), str(tmp_path / "segs.npz"),
         str(tmp_path / "spec.json"), str(tmp_path / "theirs.npz")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    theirs = np.load(tmp_path / "theirs.npz")
    for name, (shape, current, new) in spec.items():
        seg = segs[name.split("/")[0]].astype(np.float64)
        mine = resample_segmentation(seg, shape, current, new)
        assert mine.shape == shape, name
        np.testing.assert_array_equal(mine, theirs[name], err_msg=name)
    # teeth: nearest-neighbour resampling is not what nnU-Net does
    nearest = resample_segmentation(blocks.astype(np.float64), *spec["blocks/down"], order=0)
    assert not np.array_equal(nearest, theirs["blocks/down"])


@pytest.fixture(scope="module")
def cascade_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """nnU-Net-made 3d_lowres + 3d_cascade_fullres folders (fold 0), a test scan and
    nnUNetv2_predict's predictions of it: low/case.nii.gz then casc/case.{nii.gz,npz}."""
    need_nnunet()
    work = tmp_path_factory.mktemp("nnunet_cascade")
    results = make_nnunet_models(
        work, DATASET, "3d_lowres,3d_cascade_fullres", "0", "--gpu-memory-target", "0.3"
    )
    cut_out_scan(work)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.update(nnUNet_def_n_proc="1", nnUNet_raw=str(work / "nnUNet_raw"),
               nnUNet_preprocessed=str(work / "nnUNet_preprocessed"),
               nnUNet_results=str(work / "nnUNet_results"))  # fmt: skip
    # -npp 0 -nps 0: nnUNetv2_predict runs in-process (predict_from_files_sequential), without
    # spawning workers that each import torch again
    common = ["-d", str(DATASET), "-f", "0", "-step_size", "0.5", "--disable_tta",
              "-device", "cpu", "-npp", "0", "-nps", "0"]  # fmt: skip
    predict = str(VENV_NNUNET / "bin" / "nnUNetv2_predict")
    for conf, out, extra in (
        ("3d_lowres", "low", []),
        ("3d_cascade_fullres", "casc", ["--save_probabilities", "-prev_stage_predictions",
                                        str(work / "low")]),
    ):  # fmt: skip
        proc = subprocess.run(
            [predict, "-i", str(work / "in"), "-o", str(work / out), "-c", conf, *common,
             *extra],
            env=env, capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return {"cascade": results / FOLDER.format("3d_cascade_fullres"),
            "scan": work / "in" / "case_0000.nii.gz", "work": work}  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_same_labels_and_probabilities_as_nnunets_cascade(cascade_models, one_torch_thread):
    from amoseg.nnunet_models import open_nnunet_model

    work = cascade_models["work"]
    image = nib.load(cascade_models["scan"])
    data = np.asanyarray(image.dataobj)
    backend = open_nnunet_model(
        cascade_models["cascade"], device="cpu", precision="fp32", step_size=0.5
    )
    assert backend.previous is not None and backend.previous.folder.configuration_name == (
        "3d_lowres"
    )
    low = backend.previous.scan_outputs(data, image.affine, "model", probabilities=False)[0]
    their_low = np.asanyarray(nib.load(work / "low" / "case.nii.gz").dataobj)
    assert float((low == their_low).mean()) >= 0.999
    assert len(np.unique(their_low)) > 3  # the one-hot input channels carry several labels
    labels, probs = backend.scan_outputs(data, image.affine, "model")
    theirs = np.asanyarray(nib.load(work / "casc" / "case.nii.gz").dataobj)
    assert labels.shape == theirs.shape == data.shape
    agree = float((labels == theirs).mean())
    assert agree >= 0.999, agree
    # nnU-Net's .npz holds (K, z, y, x): SimpleITK's axis order of the file's grid
    their_probs = np.load(work / "casc" / "case.npz")["probabilities"].transpose(0, 3, 2, 1)
    assert probs is not None
    diff = float(np.abs(probs.numpy() - their_probs).max())
    assert diff < 1e-3, diff


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cli_predicts_nnunets_cascade_folder(cascade_models, tmp_path):
    out = tmp_path / "out"
    proc = run_amoseg("predict", str(cascade_models["cascade"]), str(cascade_models["scan"]),
                      "-o", str(out), "--step-size", "0.5", "--device", "cpu")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    mine = np.asanyarray(nib.load(out / "case_seg.nii.gz").dataobj)
    # this dataset's labels are AMOS's own, so amoseg's AMOS ids are nnU-Net's labels
    theirs = np.asanyarray(nib.load(cascade_models["work"] / "casc" / "case.nii.gz").dataobj)
    assert float((mine == theirs).mean()) >= 0.999
