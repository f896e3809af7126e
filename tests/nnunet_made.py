"""Tiny nnU-Net-made model folders for the parity tests (tests/test_nnunet_parity.py, the
cascade's in tests/test_nnunet_cascade.py, tests/test_vs_nnunet.py's environment check):
phantoms → nnU-Net's raw layout → its planner + trainer (tests/nnunet_model_maker.py, run in
`.venv-nnunet`) → a cut-out test scan whose zero borders make nnU-Net's crop to non-zero act.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.nnunet_layout import to_nnunet

REPO = Path(__file__).resolve().parents[1]
VENV_NNUNET = REPO / ".venv-nnunet"


def need_nnunet(entry: str = "nnUNetv2_predict") -> Path:
    """nnU-Net's environment (its `entry` script must exist), or skip — fail in CI (env CI
    set), where .ci/run creates it."""
    if not (VENV_NNUNET / "bin" / entry).exists():
        reason = f"nnU-Net's environment {VENV_NNUNET} is missing"
        if os.environ.get("CI"):
            pytest.fail(reason + " (.ci/run creates it)")
        pytest.skip(reason + " (run `python bench/vs_nnunet.py --smoke` once to create it)")
    return VENV_NNUNET


def make_nnunet_models(
    work: Path, dataset: int, configurations: str, folds: str, *extra: str
) -> Path:
    """4 phantoms (seed 3) as nnU-Net's Dataset<dataset>_Tiny, planned and trained (random
    weights, saved by nnU-Net's trainer) for `configurations` ("2d,3d_fullres") and `folds`
    ("0,1"); `extra`: more model-maker options. Returns nnUNet_results/Dataset<dataset>_Tiny."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(
        [sys.executable, "-m", "amoseg", "synth", str(work / "amos"), "--cases", "4",
         "--seed", "3"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    to_nnunet(work / "amos", work / "nnUNet_raw" / f"Dataset{dataset}_Tiny")
    env.pop("PYTHONPATH")
    proc = subprocess.run(
        [str(VENV_NNUNET / "bin" / "python"), str(REPO / "tests" / "nnunet_model_maker.py"),
         str(work), str(dataset), configurations, folds, *extra],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return work / "nnUNet_results" / f"Dataset{dataset}_Tiny"


def cut_out_scan(work: Path) -> tuple[np.ndarray, np.ndarray]:
    """work/in/case_0000.nii.gz: a cut-out of a held-out phantom with zero borders (so
    nnU-Net's crop to non-zero acts). Returns its (data, affine)."""
    source = nib.load(next((work / "amos" / "imagesTs").glob("*.nii.gz")))
    data = np.asanyarray(source.dataobj)[20:100, 30:102, 10:40].copy()
    data[:6] = 0
    data[:, -5:] = 0
    affine = source.affine.copy()
    affine[:3, 3] = source.affine[:3, :3] @ [20, 30, 10] + source.affine[:3, 3]
    (work / "in").mkdir()
    nib.save(nib.Nifti1Image(data, affine), work / "in" / "case_0000.nii.gz")
    return data, affine
