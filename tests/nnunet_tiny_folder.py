"""A tiny nnU-Net v2 model folder written without nnU-Net (fast tests of the wiring): plans.json
in nnU-Net 2.8.1's format, dataset.json with the given labels, and fold checkpoints shaped like
nnU-Net's trainer saves them (numpy scalars in `_best_ema` and `logging`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

ARCH_3D = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 3,
        "features_per_stage": [4, 8, 8],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [1, 1, 1],
        "n_conv_per_stage_decoder": [1, 1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def plans(spacing: list[float]) -> dict:
    conf = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [8, 32, 32],
        "spacing": spacing,
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {
            "is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None,
        },
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {
            "is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None,
        },
        "architecture": ARCH_3D,
    }  # fmt: skip
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "foreground_intensity_properties_per_channel": {
            "0": {"mean": 60.0, "std": 80.0, "percentile_00_5": -900.0, "percentile_99_5": 300.0}
        },
        "configurations": {"3d_fullres": conf},
    }


def make_model_folder(
    root: Path,
    labels: list[str],
    folds: tuple[int, ...] = (0,),
    spacing: tuple[float, float, float] = (6.0, 4.0, 4.0),
    extra: dict | None = None,
) -> Path:
    """root/Dataset999_Tiny/nnUNetTrainer__nnUNetPlans__3d_fullres with random weights."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    folder = root / "Dataset999_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    p = plans(list(spacing))
    (folder / "plans.json").write_text(json.dumps(p))
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {name: i for i, name in enumerate(labels)},
        "numTraining": 1,
        "file_ending": ".nii.gz",
        **(extra or {}),
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))
    kwargs = dict(ARCH_3D["arch_kwargs"])
    kwargs.update(
        conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU
    )
    for fold in folds:
        torch.manual_seed(fold)
        net = PlainConvUNet(1, num_classes=len(labels), deep_supervision=False, **kwargs)
        (folder / f"fold_{fold}").mkdir()
        torch.save(
            {
                "network_weights": net.state_dict(),
                "optimizer_state": None,
                "grad_scaler_state": None,
                "logging": {"ema_fg_dice": [np.float64(0.5)], "mean_fg_dice": [np.float32(0.4)]},
                "_best_ema": np.float64(0.5),
                "current_epoch": 1,
                "init_args": {"configuration": "3d_fullres", "fold": fold},
                "trainer_name": "nnUNetTrainer",
                "inference_allowed_mirroring_axes": (0, 1, 2),
            },
            folder / f"fold_{fold}" / "checkpoint_final.pth",
        )
    return folder
