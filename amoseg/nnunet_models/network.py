"""Rebuild an nnU-Net v2 network from plans.json with dynamic-network-architectures.

plans.json names classes by dotted path (`network_class_name`, and `conv_op`, `norm_op`,
`nonlin`, `dropout_op` in `_kw_requires_import`). A downloaded plans file must not be able to
import arbitrary code, so only torch.nn layers and the U-Nets of
`dynamic_network_architectures.architectures.unet` are resolved.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from amoseg.errors import AmosegError
from amoseg.ops.weights import build_loaded

_NETWORKS = ("PlainConvUNet", "ResidualEncoderUNet", "ResidualUNet")
_UNET_MODULE = "dynamic_network_architectures.architectures.unet"


def _network_class(name: str, plans_path: Path) -> type[nn.Module]:
    short = name.rsplit(".", 1)[-1]
    if short not in _NETWORKS or not name.startswith("dynamic_network_architectures."):
        raise AmosegError(
            f"network {name} is not one amoseg rebuilds", plans_path, f"supported: {_NETWORKS}"
        )
    try:
        module = importlib.import_module(_UNET_MODULE)
    except ImportError:
        raise AmosegError(
            "nnU-Net models need the dynamic-network-architectures package",
            None,
            "pip install dynamic-network-architectures",
        ) from None
    return getattr(module, short)


def _torch_layer(name: str, plans_path: Path) -> type[nn.Module]:
    """'torch.nn.modules.conv.Conv3d' or 'torch.nn.LeakyReLU' → the class (torch.nn only)."""
    short = name.rsplit(".", 1)[-1]
    layer = getattr(nn, short, None)
    if not name.startswith("torch.nn.") or not isinstance(layer, type):
        raise AmosegError(f"plans.json names a layer outside torch.nn: {name}", plans_path)
    return layer


def architecture_of(conf: dict[str, Any]) -> dict[str, Any]:
    """The `architecture` entry, translated from nnU-Net's older plans format (UNet_class_name,
    UNet_base_num_features, …) the way nnU-Net 2.8.1's ConfigurationManager does."""
    if "architecture" in conf:
        return copy.deepcopy(conf["architecture"])
    cls = conf["UNet_class_name"]
    n_stages = len(conf["n_conv_per_stage_encoder"])
    dim = len(conf["patch_size"])
    blocks = "n_conv_per_stage" if cls == "PlainConvUNet" else "n_blocks_per_stage"
    return {
        "network_class_name": f"dynamic_network_architectures.architectures.unet.{cls}",
        "arch_kwargs": {
            "n_stages": n_stages,
            "features_per_stage": [
                min(conf["UNet_base_num_features"] * 2**i, conf["unet_max_num_features"])
                for i in range(n_stages)
            ],
            "conv_op": f"torch.nn.Conv{dim}d",
            "kernel_sizes": conf["conv_kernel_sizes"],
            "strides": conf["pool_op_kernel_sizes"],
            blocks: conf["n_conv_per_stage_encoder"],
            "n_conv_per_stage_decoder": conf["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": f"torch.nn.InstanceNorm{dim}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def build_network(
    conf: dict[str, Any], in_channels: int, num_classes: int, plans_path: Path
) -> nn.Module:
    """The configuration's network (no deep supervision, as nnU-Net predicts), in eval mode."""
    try:
        arch = architecture_of(conf)
        kwargs = dict(arch["arch_kwargs"])
        for key in arch.get("_kw_requires_import", []):
            if kwargs.get(key) is not None:
                kwargs[key] = _torch_layer(str(kwargs[key]), plans_path)
        cls = _network_class(str(arch["network_class_name"]), plans_path)
        net = cls(
            input_channels=in_channels, num_classes=num_classes, deep_supervision=False, **kwargs
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AmosegError(
            f"plans.json does not describe a network amoseg can build ({type(exc).__name__}: "
            f"{exc})",
            plans_path,
        ) from None
    return net.eval()


def load_weights(
    make: Callable[[], nn.Module], weights: dict[str, torch.Tensor], path: Path
) -> nn.Module:
    """`make()`'s network holding `weights` exactly (a mismatch means plans and checkpoint
    disagree); built without initial weights (`amoseg.ops.weights`), the tensors its own."""
    try:
        return build_loaded(make, weights).eval()
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise AmosegError(
            f"checkpoint does not fit the network in plans.json ({first[0].strip()[:160]})", path
        ) from None
