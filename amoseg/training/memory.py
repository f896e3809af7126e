"""How much memory a training run will take, estimated before the network is built.

A network too large for the machine should get one line, not the kernel's OOM killer. The
model is built on PyTorch's `meta` device (shapes only, no storage), so even a network of
terabytes costs nothing to measure; one forward pass on a meta batch gives every layer's
output size. Training keeps those activations for the backward pass, plus gradients of the
live ones; weights cost four copies (weights, gradients, Adam's two moments). Measured peaks
are in docs/reliability.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from amoseg.errors import AmosegError

GIB = 1 << 30
#: slack for what the estimate leaves out (allocator, data loading, validation, the store).
HEADROOM = 1.25


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    activation_values: int  # per training batch
    bytes: int

    def gib(self) -> float:
        return self.bytes / GIB


def estimate_training_memory(
    model_cls: type,
    input_size: int | None,
    hparams: dict[str, Any],
    batch_size: int,
    spatial: tuple[int, ...] | None = None,
) -> MemoryEstimate | None:
    """Bytes a training step needs (fp32) on batches of `spatial` (default: input_size²), or
    None for models without a torch network."""
    import torch

    from amoseg.models.torch_model import TorchModel
    from amoseg.ops.weights import shapes_only

    if not issubclass(model_cls, TorchModel) or not model_cls.gradient_trained:
        return None
    model = shapes_only(lambda: model_cls(input_size=input_size, **hparams))
    net = model.net
    params = sum(p.numel() for p in net.parameters())
    outputs = 0

    def count(_module: Any, _inputs: Any, output: Any) -> None:
        nonlocal outputs
        if isinstance(output, torch.Tensor):
            outputs += output.numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(count) for m in leaves]
    try:
        channels = model.input_channels
        shape = spatial or (int(input_size or 0),) * 2
        x = torch.empty((batch_size, channels, *shape), device="meta")
        # a per-image z-score takes each image's [mean, std] beside the batch
        stats = torch.empty((batch_size, 2), device="meta") if model.needs_stats else None
        net(x, stats)
    except Exception:  # a network the meta device cannot run: count weights only
        outputs = 0
    finally:
        for hook in hooks:
            hook.remove()
    # fp32: weights ×4 (weights, gradients, two Adam moments); activations ×1.5 (kept for
    # backward, plus the gradients of the live ones; ReLUs and views share storage)
    total = 4 * (4 * params + 1.5 * outputs)
    return MemoryEstimate(params, outputs, int(total * HEADROOM))


def available_bytes(device: Any) -> int | None:
    """Free memory where the run trains: the GPU's free memory, or the OS's MemAvailable."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(
    model_cls: type,
    input_size: int | None,
    hparams: dict[str, Any],
    batch_size: int,
    device: Any,
    spatial: tuple[int, ...] | None = None,
) -> MemoryEstimate | None:
    """Refuse, in one line, a run whose estimate exceeds the free memory of its device."""
    estimate = estimate_training_memory(model_cls, input_size, hparams, batch_size, spatial)
    free = available_bytes(device)
    if estimate is None or free is None or estimate.bytes <= free:
        return estimate
    where = "GPU" if getattr(device, "type", str(device)) == "cuda" else "RAM"
    raise AmosegError(
        f"the network needs about {estimate.gib():.1f} GiB to train ({estimate.parameters:,} "
        f"parameters, batch {batch_size} of {'×'.join(map(str, spatial or (input_size,) * 2))})"
        ", more than the "
        f"{free / GIB:.1f} GiB of free {where}",
        hint="lower --batch-size or the network size (e.g. --hparams '{\"base\": 16}')",
    )
