"""Build a network straight into saved weights: no random initial weights first.

Building a 3D U-Net on a CPU spends most of its time drawing initial weights that loading a
checkpoint replaces at once (predict builds one per fold and per stage). Built on the meta
device, the module holds no memory, and the checkpoint's tensors are assigned to it in place
of copies. The initialisers' in-place writes are skipped there too (`shapes_only`): on meta
tensors they run torch's Python reference kernels, whose first use imports torch._dynamo
(about 0.9 s of a predict's start-up on a 2-core CPU)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

M = TypeVar("M", bound=nn.Module)
T = TypeVar("T")

#: the in-place tensor methods weight initialisers (`torch.nn.init`, modules'
#: `reset_parameters`) write with; on a meta tensor there is nothing to write
_INIT_WRITES = frozenset(
    ("normal_", "uniform_", "fill_", "zero_", "copy_", "erfinv_", "clamp_", "mul_", "add_",
     "exponential_", "bernoulli_", "random_", "log_normal_", "cauchy_", "geometric_")
)  # fmt: skip


class _ShapesOnly(TorchFunctionMode):
    """Skip initialisers' in-place writes to meta tensors (the values are never read)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if (
            getattr(func, "__name__", "") in _INIT_WRITES
            and args
            and isinstance(args[0], torch.Tensor)
            and args[0].is_meta
        ):
            return args[0]
        return func(*args, **(kwargs or {}))


def shapes_only(make: Callable[[], T]) -> T:
    """`make()` (a module, or a model holding one) on the meta device: its tensors' shapes,
    no memory, no values."""
    with torch.device("meta"), _ShapesOnly():
        return make()


def build_loaded(make: Callable[[], M], state: Mapping[str, torch.Tensor]) -> M:
    """`make()`'s module holding `state` (strict: missing, unexpected or mis-shaped entries
    raise torch's RuntimeError, as `load_state_dict` does). The state's tensors become the
    module's, so pass tensors nothing else will change. A module with tensors the state does
    not carry (non-persistent buffers) is built for real and loaded by copy."""
    net = shapes_only(make)
    net.load_state_dict(state, assign=True)
    if any(t.is_meta for t in itertools.chain(net.parameters(), net.buffers())):
        net = make()
        net.load_state_dict(state)
    return net
