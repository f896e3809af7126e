"""A random-weight model folder laid out exactly as TotalSegmentator 2.18.0 reads its `--fast`
model (task `total`, 3 mm), so that its own CLI runs offline on it (facts and sources:
/work/shared/notes/totalsegmentator.md):

    TOTALSEG_HOME_DIR/config.json      (send_usage_stats false: no network call)
    TOTALSEG_HOME_DIR/nnunet/results/Dataset297_TotalSegmentator_total_3mm_1559subj/
        nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres/
            dataset.json  (118 labels: background + class_map["total"], its own ids)
            plans.json    (nnU-Net's planner on phantoms resampled to 3 mm isotropic)
            fold_0/checkpoint_final.pth

Two steps, in two environments:
- `write_raw_dataset` (amoseg's python): AMOS-format phantoms → nnUNet_raw/Dataset297_*, each
  case reoriented to RAS and resampled to 3 mm isotropic (order 1 image, order 0 labels), as
  TotalSegmentator's 3 mm model saw its data, labels renumbered to TotalSegmentator's ids by
  name (amoseg.labels.organ_id over the package's own class names);
- this file run with `.venv-nnunet`'s python: nnU-Net plans and preprocesses that dataset, then
  saves one checkpoint through its own `nnUNetTrainer_4000epochs_NoMirroring`:

    python bench/totalseg_model.py WORK TOTALSEG_HOME [--full-size] [--mirror-axes 0,1,2]
                                   [--checkpoint-trainer nnUNetTrainer]

That trainer stores no mirroring axes (as TotalSegmentator's real checkpoint: nnU-Net's and
amoseg's --tta mirror nothing there); `--mirror-axes` stores some, so that the bench's mirroring
arm measures what TTA costs on this network. TotalSegmentator itself never mirrors (tta=False).

`--checkpoint-trainer nnUNetTrainer` writes that name into the checkpoint's `trainer_name`
(the folder keeps its NoMirroring name, which is how TotalSegmentator finds it). nnU-Net looks
the class up by that name only to build the network (the same network for both); looking up
`nnUNetTrainer_4000epochs_NoMirroring` walks nnU-Net's trainer packages and imports its Primus
trainers → timm → torchvision, and the only torchvision for CPU torch 2.13.0 here (0.28.0) is a
CUDA build that fails to import: with the real name, `TotalSegmentator --fast` and
`nnUNetv2_predict` both fail in these environments.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

DATASET = "Dataset297_TotalSegmentator_total_3mm_1559subj"
TRAINER = "nnUNetTrainer_4000epochs_NoMirroring"
MODEL_SUBDIR = f"{TRAINER}__nnUNetPlans__3d_fullres"
SPACING_MM = 3.0
REPO = Path(__file__).resolve().parents[1]


def model_dir(totalseg_home: Path) -> Path:
    """Where TotalSegmentator 2.18.0 looks for the `total --fast` model under TOTALSEG_HOME_DIR
    (config.get_weights_dir() / TASK_ID_WEIGHTS_CONFIGS[297]["foldername"] / nnU-Net's
    <trainer>__<plans>__<configuration>)."""
    return totalseg_home / "nnunet" / "results" / DATASET / MODEL_SUBDIR


def write_config(totalseg_home: Path) -> None:
    """TotalSegmentator's config.json, written before its first run: usage statistics off (they
    are an HTTPS POST after each prediction) and the disclaimer marked shown."""
    totalseg_home.mkdir(parents=True, exist_ok=True)
    config = {
        "totalseg_id": "totalseg_AMOSBNCH",
        "send_usage_stats": False,
        "prediction_counter": 0,
        "statistics_disclaimer_shown": True,
    }
    (totalseg_home / "config.json").write_text(json.dumps(config, indent=4))


def write_raw_dataset(amos_root: Path, raw: Path, ts_classes: dict[int, str]) -> Path:
    """nnUNet_raw/Dataset297_* from AMOS-format phantoms (amoseg's python): canonical (RAS),
    3 mm isotropic, labels renumbered AMOS id → TotalSegmentator id by class name."""
    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    from amoseg.data.datasets import find_cases
    from amoseg.labels import NUM_CLASSES, organ_id

    ts_of_amos = np.zeros(NUM_CLASSES, dtype=np.uint8)
    for ts_id, name in sorted(ts_classes.items()):
        amos = organ_id(name)
        if amos and not ts_of_amos[amos]:
            ts_of_amos[amos] = ts_id
    out = raw / DATASET
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    cases = find_cases(amos_root)
    for case in cases:
        for src, dst, order in (
            (case.image, out / "imagesTr" / f"{case.case_id}_0000.nii.gz", 1),
            (case.label, out / "labelsTr" / f"{case.case_id}.nii.gz", 0),
        ):
            img = nib.as_closest_canonical(nib.load(str(src)))
            zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
            zoom = zooms / SPACING_MM
            data = np.asarray(img.dataobj)
            if order == 0:
                data = ts_of_amos[data.astype(np.int64)]
            new = ndimage.zoom(data.astype(np.float32), zoom, order=order, mode="nearest")
            affine = img.affine.copy()
            affine[:3, :3] = affine[:3, :3] / zoom
            dtype = np.uint8 if order == 0 else np.int16
            res = nib.Nifti1Image(np.round(new).astype(dtype), affine)
            res.set_data_dtype(dtype)
            nib.save(res, str(dst))
    spec = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: i for i, name in sorted(ts_classes.items())}},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": "TotalSegmentator total 3 mm layout, random weights (amoseg bench)",
    }
    (out / "dataset.json").write_text(json.dumps(spec, indent=2))
    return out


def main(
    work: Path,
    totalseg_home: Path,
    full_size: bool,
    mirror_axes: tuple[int, ...] | None,
    checkpoint_trainer: str | None = None,
) -> Path:
    """Plan (nnU-Net's planner), shrink unless full_size, save fold 0 through the
    NoMirroring trainer straight into TotalSegmentator's weights folder."""
    sys.path.insert(0, str(REPO))
    from tests.nnunet_model_maker import shrink

    env = dict(os.environ)
    paths = {
        "nnUNet_raw": work / "nnUNet_raw",
        "nnUNet_preprocessed": work / "nnUNet_preprocessed",
        "nnUNet_results": totalseg_home / "nnunet" / "results",
    }
    for key, value in paths.items():
        env[key] = os.environ[key] = str(value)
    bin_dir = Path(sys.executable).parent
    subprocess.run(
        [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", "297", "-c", "3d_fullres",
         "-np", "1", "--verify_dataset_integrity"],
        env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    import numpy as np
    import torch
    from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs_NoMirroring import (  # noqa: E501
        nnUNetTrainer_4000epochs_NoMirroring,
    )

    pre = paths["nnUNet_preprocessed"] / DATASET
    plans_file = pre / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text())
    if not full_size:
        shrink(plans, ["3d_fullres"])
    plans_file.write_text(json.dumps(plans, indent=2))
    dataset_json = json.loads((pre / "dataset.json").read_text())
    torch.set_num_threads(1)
    torch.manual_seed(297)
    given = copy.deepcopy(plans)
    given["continue_training"] = False  # 2.8.1 pops it in __init__
    trainer = nnUNetTrainer_4000epochs_NoMirroring(
        given, "3d_fullres", 0, dataset_json, device=torch.device("cpu")
    )
    trainer.initialize()
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # axes: None
    if mirror_axes is not None:
        trainer.inference_allowed_mirroring_axes = mirror_axes
    trainer._best_ema = np.float64(0.25)  # numpy scalars, as a trained checkpoint holds them
    trainer.logger.log("ema_fg_dice", np.float64(0.5), 0)
    trainer.logger.log("mean_fg_dice", np.float32(0.5), 0)
    trainer.logger.log("dice_per_class_or_region", [np.float64(0.5)], 0)
    out = Path(trainer.output_folder)
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(str(out / "checkpoint_final.pth"))
    if checkpoint_trainer is not None:
        checkpoint = torch.load(out / "checkpoint_final.pth", weights_only=False)
        checkpoint["trainer_name"] = checkpoint_trainer
        torch.save(checkpoint, out / "checkpoint_final.pth")
    base = Path(trainer.output_folder_base)
    assert base == model_dir(totalseg_home), base
    shutil.copy(pre / "dataset.json", base / "dataset.json")
    shutil.copy(plans_file, base / "plans.json")
    shutil.copy(pre / "dataset_fingerprint.json", base / "dataset_fingerprint.json")
    write_config(totalseg_home)
    return base


def _flag(name: str) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None


if __name__ == "__main__":
    given = _flag("--mirror-axes")
    axes = tuple(int(a) for a in given.split(",")) if given else None
    print(
        main(
            Path(sys.argv[1]),
            Path(sys.argv[2]),
            "--full-size" in sys.argv,
            axes,
            _flag("--checkpoint-trainer"),
        )
    )
