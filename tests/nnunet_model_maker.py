"""Make tiny random-weight nnU-Net v2 model folders with nnU-Net's own code (run it with the
python of `.venv-nnunet`, never amoseg's): plan and preprocess a raw dataset, shrink the planned
networks so CPU tests stay fast, and save one checkpoint per fold through nnU-Net's own trainer
(`initialize()` + `save_checkpoint()`), with numpy scalars in `_best_ema` and `logging` as a
trained run has them.

    python nnunet_model_maker.py WORK DATASET_ID CONF[,CONF] FOLDS [--full-size]
        [--gpu-memory-target GB]

`--full-size` keeps the networks nnU-Net planned (for benchmarks, not tests).
`--gpu-memory-target GB` is passed to nnU-Net's planner (`-gpu_memory_target`): on tiny
phantoms a small target (0.3) shrinks the 3d_fullres patch below a quarter of the median
image, so nnU-Net's own rule plans 3d_lowres and 3d_cascade_fullres (nothing is hand-edited).
CONF may then name 3d_lowres and 3d_cascade_fullres; the cascade is preprocessed as the
3d_fullres it inherits from, and its network reads the image plus one channel per foreground
label, as nnU-Net's trainer builds it.

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


def with_parents(plans: dict, configurations: list[str]) -> list[str]:
    """The configurations and those they inherit from (3d_cascade_fullres → 3d_fullres)."""
    names: list[str] = []
    for name in configurations:
        while name is not None and name not in names:
            names.append(name)
            name = plans["configurations"][name].get("inherits_from")
    return names


def shrink(plans: dict, configurations: list[str]) -> None:
    """A few features per stage and half the planned patch: the same architecture family,
    a network small enough for a CPU test, and several overlapping tiles per scan."""
    for name in with_parents(plans, configurations):
        conf = plans["configurations"][name]
        if "architecture" not in conf:  # inherits it (the cascade)
            continue
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
    gpu_memory_target: float | None = None,
) -> None:
    env = dict(os.environ)
    for sub in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[sub] = str(work / sub)
        os.environ[sub] = env[sub]
    bin_dir = Path(sys.executable).parent
    # the cascade has no data of its own: nnU-Net preprocesses it as 3d_fullres
    prep = [c if c != "3d_cascade_fullres" else "3d_fullres" for c in configurations]
    memory = [] if gpu_memory_target is None else ["-gpu_memory_target", str(gpu_memory_target)]
    subprocess.run(
        [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c",
         *dict.fromkeys(prep), "-np", "1", "--verify_dataset_integrity", *memory],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    import numpy as np
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    pre = next((work / "nnUNet_preprocessed").glob(f"Dataset{dataset_id:03d}_*"))
    plans_file = pre / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    missing = [c for c in configurations if c not in plans["configurations"]]
    if missing:
        sys.exit(f"nnU-Net did not plan {missing[0]} (try --gpu-memory-target 0.3)")
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


def _option(args: list[str], name: str) -> float | None:
    return float(args[args.index(name) + 1]) if name in args else None


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3].split(","),
        [int(f) for f in sys.argv[4].split(",")],
        full_size="--full-size" in sys.argv[5:],
        gpu_memory_target=_option(sys.argv[5:], "--gpu-memory-target"),
    )
