"""Networks built straight into their saved weights (`amoseg.ops.weights.build_loaded`):
the same module and outputs as building and then loading, no tensor shared where a later
change would leak, and torch's own errors for a state that does not fit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from amoseg.models.registry import create_model
from amoseg.ops.weights import build_loaded


class WithScratch(nn.Module):
    """A module with a buffer no state dict carries (non-persistent)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3)
        self.register_buffer("scratch", torch.ones(3), persistent=False)


def test_the_state_is_assigned_not_copied_and_nothing_is_left_on_meta():
    torch.manual_seed(0)
    state = nn.Conv3d(2, 4, 3).state_dict()
    net = build_loaded(lambda: nn.Conv3d(2, 4, 3), state)
    assert not any(p.is_meta for p in net.parameters())
    assert net.weight.data_ptr() == state["weight"].data_ptr()  # no random init, no copy
    x = torch.randn(1, 2, 5, 5, 5)
    expected = nn.Conv3d(2, 4, 3)
    expected.load_state_dict(state)
    torch.testing.assert_close(net(x), expected(x), rtol=0, atol=0)


def test_a_buffer_the_state_lacks_falls_back_to_a_real_build():
    state = WithScratch().state_dict()
    assert "scratch" not in state
    net = build_loaded(WithScratch, state)
    assert not net.scratch.is_meta and torch.equal(net.scratch, torch.ones(3))
    torch.testing.assert_close(net.conv.weight, state["conv.weight"])


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_a_state_that_does_not_fit_raises_torchs_error(change):
    state = dict(nn.Conv3d(2, 4, 3).state_dict())
    if change == "missing":
        del state["bias"]
    elif change == "unexpected":
        state["extra"] = torch.zeros(1)
    else:
        state["weight"] = torch.zeros(4, 2, 5, 5, 5)
    with pytest.raises(RuntimeError):
        build_loaded(lambda: nn.Conv3d(2, 4, 3), state)


def test_a_rebuilt_recipe_model_predicts_as_before_and_owns_its_tensors():
    torch.manual_seed(0)
    model = create_model("unet3d", base=4, stages=3, patch_size=[16, 16, 16])
    ckpt = model.checkpoint_payload()
    again = type(model).from_checkpoint(ckpt, "cpu")
    x = torch.randn(1, 1, 16, 16, 16)
    model.net.eval()
    again.net.eval()
    with torch.no_grad():
        torch.testing.assert_close(again.net(x), model.net(x), rtol=0, atol=0)
    # neither the checkpoint (a bundle reads it again) nor the trained net is shared
    for name, p in again.net.named_parameters():
        assert p.data_ptr() != ckpt["state"][name].data_ptr()
    exported = again.export_module()
    with torch.no_grad():
        for p in exported.parameters():
            p.add_(1.0)  # what a backend's in-place layout change could do
        torch.testing.assert_close(again.net(x), model.net(x), rtol=0, atol=0)
