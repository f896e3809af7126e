"""The one Preprocessor: the seed configuration reproduces the store `prepare` has always
written, and `invert` undoes orient → crop → resample exactly."""

from __future__ import annotations

import json
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from amoseg.data.synth import generate_dataset
from amoseg.preprocessing import Normalisation, Preprocessor, PreprocessRecord
from amoseg.preprocessing.orient import canonical_affine
from amoseg.store.prepare import prepare_dataset
from amoseg.store.slice_store import SliceStore


def old_volume_to_slices(volume: np.ndarray, size: int, is_label: bool) -> np.ndarray:
    """Frozen copy of `geometry.volume_to_slices` as prepare ran it up to commit cfbde10."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, 2, 0)))[:, None]
    if is_label:
        out = F.interpolate(t.to(torch.uint8), size=(size, size), mode="nearest-exact")
        return out[:, 0].numpy().astype(np.uint8)
    out = F.interpolate(
        t.float(),
        size=(size, size),
        mode="bilinear",
        antialias=size < max(volume.shape[0], volume.shape[1]),
        align_corners=False,
    )
    return out[:, 0].numpy()


def old_seed_case(image_path, label_path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """What prepare stored for one case before the Preprocessor (organ slices, int16)."""
    img = nib.load(str(image_path))
    lab = np.asarray(nib.load(str(label_path)).dataobj).astype(np.uint8)
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt("RAS")
    )
    image = nib.orientations.apply_orientation(np.asarray(img.dataobj), ornt)
    label = nib.orientations.apply_orientation(lab, ornt)
    kept = np.flatnonzero(label.max(axis=(0, 1)))
    resized = old_volume_to_slices(image[:, :, kept], size, is_label=False)
    resized = np.clip(np.rint(resized), -32768, 32767).astype(np.int16)
    return resized, old_volume_to_slices(label[:, :, kept], size, is_label=True)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "root"
    return generate_dataset(root, cases=3, seed=0, preset="demo", progress=False)


@pytest.mark.parametrize("size", [40, 200])  # shrink (antialiased) and enlarge
def test_seed_store_unchanged(synth_root, tmp_path, size):
    root = synth_root
    out = tmp_path / "store"
    prepare_dataset(root, out, size=size, seed=0, progress=False)
    store = SliceStore(out)
    case_ids = [c for split in ("train", "val", "test") for c in store.cases(split)]
    assert len(case_ids) == 3
    for case_id in case_ids:
        meta = store.meta(case_id)
        image, label = old_seed_case(meta["image_file"], meta["label_file"], size)
        assert store.image(case_id).dtype == np.int16
        np.testing.assert_array_equal(np.asarray(store.image(case_id)), image)
        np.testing.assert_array_equal(np.asarray(store.label(case_id)), label)


def test_seed_store_unchanged_on_real_amos(realdata, tmp_path):
    out = tmp_path / "store"
    prepare_dataset(realdata / "amos_mini", out, size=96, seed=0, progress=False)
    store = SliceStore(out)
    for case_id in [c for s in ("train", "val", "test") for c in store.cases(s)]:
        meta = store.meta(case_id)
        image, label = old_seed_case(meta["image_file"], meta["label_file"], 96)
        np.testing.assert_array_equal(np.asarray(store.image(case_id)), image)
        np.testing.assert_array_equal(np.asarray(store.label(case_id)), label)
        record = PreprocessRecord.from_dict(meta["preprocess"])
        assert record.shape == (96, 96, len(meta["kept_slices"]))


AFFINES = {
    "RAS": np.diag([0.8, 0.7, 2.5, 1.0]),
    "LAS": np.diag([-0.8, 0.7, 2.5, 1.0]),
    "LPS permuted": np.array(
        [[0, -0.7, 0, 10], [-0.8, 0, 0, 20], [0, 0, 2.5, -30], [0, 0, 0, 1]], dtype=float
    ),
}


def phantom(shape=(40, 36, 9), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like body (soft tissue in air) with three box organs, file order (X, Y, Z)."""
    rng = np.random.default_rng(seed)
    image = np.full(shape, -1000, np.int16)
    image[5:25, 4:22, :] = rng.integers(-100, 100, size=(20, 18, shape[2]))
    label = np.zeros(shape, np.uint8)
    label[8:14, 6:12, 1:5] = 6
    label[15:22, 13:20, 3:8] = 1
    label[10:12, 16:19, 0:9] = 8
    return image, label


def one_hot(label: torch.Tensor, classes: int = 16) -> torch.Tensor:
    """(Z, X, Y) labels → (C, Z, X, Y) one-hot probabilities."""
    return F.one_hot(label.long(), classes).permute(3, 0, 1, 2).float()


@pytest.mark.parametrize("orientation", sorted(AFFINES))
@pytest.mark.parametrize(
    "pre",
    [
        Preprocessor(spacing=(None, None, None)),  # orient only
        Preprocessor(spacing=(None, None, None), crop_threshold=-500),  # + body crop
        Preprocessor(spacing=(0.4, 0.35, 1.25), crop_threshold=-500),  # ×2 finer, every axis
    ],
    ids=["orient", "crop", "crop+upsample"],
)
def test_labels_round_trip_exactly(orientation, pre):
    image, label = phantom()
    affine = AFFINES[orientation]
    out = pre.forward(image, affine, label)
    assert out.image.shape == out.label.shape
    back = pre.invert_labels(one_hot(out.label), out.record)
    np.testing.assert_array_equal(back.numpy(), label)
    probs = pre.invert(one_hot(out.label), out.record)
    assert probs.shape == (16, *label.shape)
    np.testing.assert_array_equal(probs.argmax(0).numpy(), label)


def test_crop_keeps_the_body_and_drops_air():
    image, label = phantom()
    pre = Preprocessor(spacing=(None, None, None), crop_threshold=-500)
    out = pre.forward(image, AFFINES["RAS"], label)
    (x0, x1), (y0, y1), (z0, z1) = out.record.crop
    assert x0 <= 5 and x1 >= 25 and y0 <= 4 and y1 >= 22 and (z0, z1) == (0, 9)
    assert (x1 - x0) * (y1 - y0) < 0.6 * 40 * 36  # air cut away
    assert out.image.shape == (9, x1 - x0, y1 - y0)


def test_downsampled_scores_come_back_smooth_and_close():
    """A coarser grid loses detail, but the inverse puts every organ back in place."""
    image, label = (a.repeat(2, 0).repeat(2, 1).repeat(2, 2) for a in phantom())
    pre = Preprocessor(spacing=(1.6, 1.4, 5.0))
    out = pre.forward(image, AFFINES["LAS"], label)
    assert out.image.shape == (9, 40, 36)
    back = pre.invert_labels(one_hot(out.label), out.record).numpy()
    for organ in (1, 6, 8):
        inter = np.logical_and(back == organ, label == organ).sum()
        dice = 2 * inter / ((back == organ).sum() + (label == organ).sum())
        assert dice > 0.9, organ


def test_grid_affine_places_preprocessed_voxels_in_the_scan():
    image, label = phantom()
    affine = AFFINES["LPS permuted"]
    pre = Preprocessor(spacing=(None, None, None), crop_threshold=-500)
    out = pre.forward(image, affine, label)
    (x0, _), (y0, _), (z0, _) = out.record.crop
    canon = canonical_affine(affine, image.shape)
    np.testing.assert_allclose(
        out.record.grid_affine() @ [1, 2, 3, 1], canon @ [1 + x0, 2 + y0, 3 + z0, 1]
    )
    # each preprocessed voxel holds the scan's voxel at the same world position
    world = out.record.grid_affine() @ [4, 5, 6, 1]
    i, j, k, _ = np.rint(np.linalg.inv(affine) @ world).astype(int)
    assert out.image[6, 4, 5] == image[i, j, k]


def test_record_survives_json():
    image, label = phantom()
    out = Preprocessor(spacing=(0.5, None, 2.0), crop_threshold=-500).forward(
        image, AFFINES["LAS"], label
    )
    again = PreprocessRecord.from_dict(json.loads(json.dumps(out.record.to_dict())))
    assert again == out.record
    assert again.intensity["std"] > 0


def test_kept_planes_invert_to_background_elsewhere():
    image, label = phantom()
    pre = Preprocessor(size=16)
    volume = pre.canonical(image, AFFINES["RAS"])
    record = pre.plan_record(volume, AFFINES["RAS"], image.shape, kept_slices=[2, 3, 4])
    stored = torch.cat(list(pre.slabs(pre.canonical(label, AFFINES["RAS"]), record, label=True)))
    assert stored.shape == (3, 16, 16)
    back = pre.invert_labels(one_hot(stored), record).numpy()
    assert not back[:, :, [0, 1, 5, 6, 7, 8]].any()
    assert (back[:, :, 2:5] == 6).sum() > 0


def test_float_images_keep_their_precision():
    image, label = phantom()
    scaled = (image.astype(np.float32) + 1000) / 2000  # MR-like, in [0, 1]
    out = Preprocessor(size=20).forward(scaled, AFFINES["RAS"], label)
    assert out.image.dtype == torch.float32 and not out.record.integer
    assert 0 < float(out.image.max()) <= 1 and not torch.equal(out.image, out.image.round())
    ints = Preprocessor(size=20).forward(image, AFFINES["RAS"], label)
    assert ints.record.integer and torch.equal(ints.image, ints.image.round())


def test_normalisation_schemes():
    x = torch.tensor([-1000.0, 0.0, 50.0, 3000.0])
    ct = Normalisation("ct", clip=(-100.0, 200.0), mean=50.0, std=25.0)
    np.testing.assert_allclose(ct.apply(x).numpy(), [-6.0, -2.0, 0.0, 6.0])
    z = Normalisation("zscore").apply(x)
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std(unbiased=False)) - 1) < 1e-5
    with pytest.raises(Exception, match="clip"):
        Normalisation("ct", clip=(5.0, 1.0), mean=0.0, std=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_same_code_on_the_gpu():
    image, label = phantom()
    pre = Preprocessor(spacing=(0.4, 0.5, 2.0), crop_threshold=-500)
    cpu = pre.forward(image, AFFINES["LAS"], label)
    gpu = pre.forward(
        torch.from_numpy(image).cuda(), AFFINES["LAS"], torch.from_numpy(label).cuda()
    )
    assert replace(gpu.record, intensity={}) == replace(cpu.record, intensity={})
    torch.testing.assert_close(gpu.image.cpu(), cpu.image, atol=1e-3, rtol=0)
    assert torch.equal(gpu.label.cpu(), cpu.label)
    back = pre.invert_labels(one_hot(gpu.label), gpu.record)
    assert back.is_cuda and np.array_equal(back.cpu().numpy(), label)
