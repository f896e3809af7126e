"""One normalisation (the plan's `Normalisation`) in training, inference and export; a per-image
z-score (MR) always uses the whole image's statistics, never a slice's or a patch's."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

import amoseg.preprocessing.normalise as normalise_module
from amoseg.data.synth import generate_dataset
from amoseg.inference.segmenter import Segmenter, SegmentOptions
from amoseg.models.networks import make_norm
from amoseg.preprocessing.normalise import Normalisation, image_stats, normalise
from amoseg.store.prepare import prepare_dataset
from amoseg.store.samplers import PatchDataset
from amoseg.store.slice_store import SliceStore
from amoseg.training import TrainSettings, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_scheme_is_the_plans_normalisation():
    x = torch.linspace(-1500, 2500, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    ct = Normalisation("ct", clip=(-100.0, 300.0), mean=50.0, std=80.0)
    torch.testing.assert_close(make_norm("ct", [-100, 300, 50, 80])(x), ct.apply(x))
    window = Normalisation("window", clip=(-1000.0, 1000.0))
    torch.testing.assert_close(make_norm("window", [-1000, 1000])(x), window.apply(x))
    assert make_norm("window", [-1000, 1000])(x).abs().max() <= 1.0


def test_zscore_uses_the_stats_it_is_given_per_image():
    x = torch.arange(24.0).reshape(2, 1, 3, 4)
    stats = torch.tensor([[10.0, 2.0], [0.0, 4.0]])  # one [mean, std] row per image
    out = normalise(x, Normalisation("zscore"), stats)
    torch.testing.assert_close(out[0], (x[0] - 10.0) / 2.0)
    torch.testing.assert_close(out[1], x[1] / 4.0)
    with pytest.raises(ValueError, match="whole image"):
        normalise(x, Normalisation("zscore"), None)  # a patch never normalises itself


def test_image_stats_are_the_whole_volumes():
    v = torch.cat([torch.zeros(4, 8, 8), torch.full((4, 8, 8), 100.0)])
    mean, std = image_stats(v).tolist()
    assert mean == pytest.approx(50.0) and std == pytest.approx(50.0)


@pytest.fixture(scope="module")
def mr_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mr-norm")
    generate_dataset(root / "amos", 3, 0, "demo", progress=False, modality="mr")
    store = root / "store"
    prepare_dataset(root / "amos", store, configuration="3d", split=(0.34, 0.33, 0.33),
                    progress=False)  # fmt: skip
    return store


def test_mr_patches_carry_their_images_statistics(mr_store):
    store = SliceStore(mr_store)
    patches = PatchDataset(store, "train", (16, 16, 4), seed=0, with_stats=True)
    case = store.cases("train")[0]
    whole = image_stats(torch.from_numpy(np.asarray(store.image(case))))
    differ = 0
    for i in range(6):
        x, _y, stats = patches[i]
        torch.testing.assert_close(stats, whole, rtol=1e-4, atol=1e-3)
        differ += not torch.allclose(image_stats(x), whole, rtol=0.05)
    assert differ >= 3  # the patches' own statistics are not the image's


@pytest.mark.slow
def test_training_and_segmenting_an_mr_store_use_per_image_statistics(
    mr_store, tmp_path, monkeypatch
):
    seen: list[torch.Tensor | None] = []
    real = normalise_module.normalise

    def spy(x, norm, stats):
        if norm.scheme == "zscore":
            seen.append(None if stats is None else stats.detach().cpu().reshape(-1, 2))
        return real(x, norm, stats)

    monkeypatch.setattr(normalise_module, "normalise", spy)
    store = SliceStore(mr_store)
    expected = {c: store.image_stats(c) for s in ("train", "val", "test") for c in store.cases(s)}
    run = tmp_path / "run"
    settings = TrainSettings(
        epochs=1, device="cpu", progress=False, batch_size=2, max_slices_per_epoch=4,
        num_workers=0,
        hparams={"base": 4, "stages": 3, "patch_size": [16, 16, 4], "augment": False},
    )  # fmt: skip
    train("unet3d", mr_store, run, settings)
    assert seen and all(s is not None for s in seen)  # training and validation
    known = torch.tensor(list(expected.values()))
    for rows in seen:
        for row in rows:  # every row is one whole stored image's [mean, std]
            assert torch.isclose(known, row, rtol=1e-3, atol=1e-2).all(1).any(), row
    # predicting an original scan: the statistics of the whole preprocessed image, which are
    # the stored case's own (prepare ran the same preprocessor on the same file)
    case = store.cases("test")[0]
    scan = nib.load(store.meta(case)["image_file"])
    seen.clear()
    segmenter = Segmenter.open(run, SegmentOptions(device="cpu"))
    labels = segmenter.labels(np.asarray(scan.dataobj), scan.affine)
    assert labels.shape == scan.shape
    rows = torch.cat([s for s in seen if s is not None])
    assert len(seen) > 1 and len({tuple(r.tolist()) for r in rows}) == 1  # one per scan
    torch.testing.assert_close(rows[0], torch.tensor(expected[case]), rtol=1e-3, atol=1e-2)
