"""Make tiny random-weight nnU-Net v2 model folders with nnU-Net's own code (run it with the
python of `.venv-nnunet`, never amoseg's): plan and preprocess a raw dataset, shrink the planned
networks so CPU tests stay fast, and save one checkpoint per fold through nnU-Net's own trainer
(`initialize()` + `save_checkpoint()`), with numpy scalars in `_best_ema` and `logging` as a
trained run has them.

    python nnunet_model_maker.py WORK DATASET_ID CONF[,CONF] FOLDS [--full-size]

`--full-size` keeps the networks nnU-Net planned (for benchmarks, not tests).

WORK holds nnUNet_raw/DatasetNNN_*; the model folders land under WORK/nnUNet_results.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def shrink(plans: dict, configurations: list[str]) -> None:
    """A few features per stage and half the planned patch: the same architecture family,
    a network small enough for a CPU test, and several overlapping tiles per scan."""
    for name in configurations:
        conf = plans["configurations"][name]
        kwargs = conf["architecture"]["arch_kwargs"]
        kwargs["features_per_stage"] = [min(4 * 2**i, 32) for i in range(kwargs["n_stages"])]
        divisors = [1] * len(conf["patch_size"])
        for stride in kwargs["strides"]:
            divisors = [d * s for d, s in zip(divisors, stride, strict=True)]
        conf["patch_size"] = [
            max(d, (p // 2) // d * d) for p, d in zip(conf["patch_size"], divisors, strict=True)
        ]


def main(
    work: Path,
    dataset_id: int,
    configurations: list[str],
    folds: list[int],
    full_size: bool = False,
) -> None:
    env = dict(os.environ)
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[sub] = str(work / sub)
        os.environ[sub] = env[sub]
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c",
         *configurations, "-np", "1", "--verify_dataset_integrity"],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    import numpy as np
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    pre = next((work / "nnUNet_preprocessed").glob(f"Dataset{dataset_id:03d}_*"))
    plans_file = pre / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    if not full_size:
        shrink(plans, configurations)
    plans_file.write_text(json.dumps(plans, indent=2))
    dataset_json = json.loads((pre / "dataset.json").read_text())
    torch.set_num_threads(1)
    for conf in configurations:
        for fold in folds:
            torch.manual_seed(1000 * fold + len(conf))
            given = copy.deepcopy(plans)
            given["continue_training"] = False  # 2.8.1 pops it in __init__
            trainer = nnUNetTrainer(given, conf, fold, dataset_json, device=torch.device("cpu"))
            trainer.initialize()
            trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
            trainer._best_ema = np.float64(0.25 + fold)
            trainer.logger.log("ema_fg_dice", np.float64(0.5), 0)
            trainer.logger.log("mean_fg_dice", np.float32(0.5), 0)
            trainer.logger.log("dice_per_class_or_region", [np.float64(0.5)], 0)
            out = Path(trainer.output_folder)
            out.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(out / "checkpoint_final.pth"))
            base = Path(trainer.output_folder_base)
            shutil.copy(pre / "dataset.json", base / "dataset.json")
            shutil.copy(plans_file, base / "plans.json")
            shutil.copy(pre / "dataset_fingerprint.json", base / "dataset_fingerprint.json")


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3].split(","),
        [int(f) for f in sys.argv[4].split(",")],
        full_size="--full-size" in sys.argv[5:],
    )
