"""amoseg's nnU-Net model reader against nnU-Net 2.8.1 itself (`.venv-nnunet`): tiny
random-weight model folders planned by `nnUNetv2_plan_and_preprocess` on phantoms and saved by
nnU-Net's own trainer; the same scan predicted by `nnUNetv2_predict_from_modelfolder` and by
amoseg (fp32, same step size, same mirroring) must agree.

Without `.venv-nnunet` the tests skip locally; in CI (env CI set) they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.nnunet_made import REPO, VENV_NNUNET, cut_out_scan, make_nnunet_models, need_nnunet

DATASET = 777


@pytest.fixture(scope="module")
def nnunet_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{'2d': model folder, '3d_fullres': model folder, 'scan': a test scan}; two folds each."""
    need_nnunet("nnUNetv2_predict_from_modelfolder")
    work = tmp_path_factory.mktemp("nnunet_parity")
    results = make_nnunet_models(work, DATASET, "2d,3d_fullres", "0,1")
    data, affine = cut_out_scan(work)
    # the same voxels stored with the file's axes permuted (slices first, the affine's columns
    # to match): nnU-Net then sees another (z, y, x) grid; the axis bookkeeping must follow
    (work / "perm").mkdir()
    permuted = nib.Nifti1Image(data.transpose(2, 0, 1).copy(), affine[:, [2, 0, 1, 3]])
    nib.save(permuted, work / "perm" / "case_0000.nii.gz")
    return {
        "2d": results / "nnUNetTrainer__nnUNetPlans__2d",
        "3d_fullres": results / "nnUNetTrainer__nnUNetPlans__3d_fullres",
        "scan": work / "in" / "case_0000.nii.gz",
        "permuted": work / "perm" / "case_0000.nii.gz",
        "work": work,
    }


CASES = [("2d", ["0"], False, "scan"), ("2d", ["0", "1"], True, "scan"),
         ("3d_fullres", ["0"], False, "scan"), ("3d_fullres", ["0", "1"], False, "scan"),
         ("3d_fullres", ["0"], False, "permuted")]  # fmt: skip


def out_dir(models: dict[str, Path], conf: str, folds: list[str], tta: bool, scan: str) -> Path:
    return models["work"] / f"pred_{conf}_{'_'.join(folds)}_{int(tta)}_{scan}"


@pytest.fixture(scope="module")
def nnunet_predictions(nnunet_models: dict[str, Path]) -> dict[str, Path]:
    """nnU-Net's own predictions of the test scan for every case, in one nnU-Net process."""
    runs = [
        {"scan": str(nnunet_models[s]), "model": str(nnunet_models[c]), "folds": f, "tta": t,
         "out": str(out_dir(nnunet_models, c, f, t, s))}
        for c, f, t, s in CASES
    ]  # fmt: skip
    spec = nnunet_models["work"] / "predict.json"
    spec.write_text(json.dumps({"runs": runs}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "nnUNet_def_n_proc": "1"}
    proc = subprocess.run(
        [str(VENV_NNUNET / "bin" / "python"), str(REPO / "tests" / "nnunet_predict_many.py"),
         str(spec)],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return nnunet_models


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("conf", "folds", "tta", "scan"), CASES)
def test_same_labels_and_probabilities_as_nnunet(
    nnunet_predictions, conf, folds, tta, scan, one_torch_thread
):
    from amoseg.nnunet_models import open_nnunet_model

    nnunet_models = nnunet_predictions
    out = out_dir(nnunet_models, conf, folds, tta, scan)
    image = nib.load(nnunet_models[scan])
    backend = open_nnunet_model(
        nnunet_models[conf], device="cpu", precision="fp32", step_size=0.5, tta=tta, folds=folds
    )
    assert backend.mirror_axes == ((0, 1) if conf == "2d" else (0, 1, 2))
    labels, probs = backend.scan_outputs(np.asanyarray(image.dataobj), image.affine, "model")
    theirs = np.asanyarray(nib.load(out / "case.nii.gz").dataobj)
    # nnU-Net's .npz holds (K, z, y, x): SimpleITK's axis order of the file's grid
    their_probs = np.load(out / "case.npz")["probabilities"].transpose(0, 3, 2, 1)
    assert labels.shape == theirs.shape == image.shape
    agree = float((labels == theirs).mean())
    assert agree >= 0.999, agree
    assert probs is not None
    diff = float(np.abs(probs.numpy() - their_probs).max())
    assert diff < 1e-3, diff
    # the AMOS view of the same run: this dataset's labels are AMOS's own, so it is the same
    amos = backend.scan_labels(np.asanyarray(image.dataobj), image.affine)
    assert float((amos == theirs).mean()) >= 0.999


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_package_of_an_nnunet_made_folder_predicts_its_labels(nnunet_models, one_torch_thread):
    """`amoseg export MODEL_DIR --package`: a folder nnU-Net's own trainer saved (numpy
    scalars, init_args, optimiser state) predicts the same labels from the package."""
    from amoseg.inference.package import export_package
    from amoseg.inference.segmenter import Segmenter, SegmentOptions

    package = nnunet_models["work"] / "2d.amoseg.zip"
    card = export_package([nnunet_models["2d"]], package)
    assert card["members"] == 1 and card["sources"][0]["folds"] == {
        "0": "fold_0/checkpoint_final.pth", "1": "fold_1/checkpoint_final.pth"}  # fmt: skip
    image = nib.load(nnunet_models["scan"])
    data = np.asanyarray(image.dataobj)
    segmenters = [
        Segmenter.open(m, SegmentOptions(device="cpu", tta=False))
        for m in (nnunet_models["2d"], package)
    ]
    got = [s.labels(data, image.affine) for s in segmenters]
    np.testing.assert_array_equal(got[1], got[0])
    # the mirroring axes travel too (`--tta` mirrors the package as it mirrors the folder)
    assert segmenters[1].backends[0].mirror_axes == segmenters[0].backends[0].mirror_axes == (0, 1)
