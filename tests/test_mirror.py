"""Left–right mirroring swaps the paired organs' ids and scores; other axes flip freely."""

from __future__ import annotations

import torch

from amoseg.data.mirror import mirror_labels, mirror_scores
from amoseg.labels import LEFT_RIGHT_PAIRS, NUM_CLASSES, left_right_permutation


def one_kidney_volume() -> torch.Tensor:
    """(X, Y, Z) with only a right kidney (2) on one side and a liver (6) across the middle."""
    y = torch.zeros(8, 6, 4, dtype=torch.uint8)
    y[1:3, 2:4, 1:3] = 2
    y[3:5, :, :] = 6
    y[6, 0, 0] = 11
    return y


def test_permutation_is_an_involution_that_swaps_only_the_pairs():
    perm = left_right_permutation()
    assert [perm[perm[c]] for c in range(NUM_CLASSES)] == list(range(NUM_CLASSES))
    moved = {c for c in range(NUM_CLASSES) if perm[c] != c}
    assert moved == {c for pair in LEFT_RIGHT_PAIRS for c in pair} == {2, 3, 11, 12}


def test_left_right_mirror_turns_the_right_kidney_into_a_left_one():
    y = one_kidney_volume()
    m = mirror_labels(y, dims=[0], lr_dim=0)
    assert (m == 2).sum() == 0 and (m == 3).sum() == (y == 2).sum()
    assert torch.equal(m == 3, (y == 2).flip(0))  # the kidney moved to the other side
    assert torch.equal(m == 12, (y == 11).flip(0))
    assert torch.equal(m == 6, (y == 6).flip(0))
    assert torch.equal(mirror_labels(m, [0], 0), y)


def test_other_axes_mirror_without_swapping():
    y = one_kidney_volume()
    for dims in ([1], [2], [1, 2]):
        assert torch.equal(mirror_labels(y, dims, lr_dim=0), y.flip(dims))


def test_scores_swap_channels_consistently_with_labels():
    torch.manual_seed(0)
    scores = torch.randn(2, NUM_CLASSES, 5, 4, 3)
    labels = scores.argmax(1)
    for dims in ([2], [3], [2, 3, 4]):
        mirrored = mirror_scores(scores, dims, lr_dim=2)
        assert torch.equal(mirrored.argmax(1), mirror_labels(labels, [d - 1 for d in dims], 1))
        assert torch.equal(mirror_scores(mirrored, dims, lr_dim=2), scores)
