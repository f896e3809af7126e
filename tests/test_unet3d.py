"""unet3d on tiny synthetic volumes: it learns, resumes exactly, and mirrors anatomically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from amoseg.atomic import read_json
from amoseg.cli.main import main
from amoseg.data.mirror import mirror_scores
from amoseg.models.checkpoint import load_checkpoint
from amoseg.models.registry import create_model
from amoseg.models.unet3d import stage_strides
from amoseg.ops.augment3d import augment_patches
from amoseg.ops.inferers import model_labels
from amoseg.ops.losses import deep_supervision_weights
from amoseg.training import TrainSettings, load_run, train
from tests.tiny_store import make_tiny_store

TINY = {"base": 4, "stages": 3, "patch_size": [16, 16, 8]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("vol") / "store", cases=5, slices=12,
                           split=(3, 1, 1))  # fmt: skip


def settings(epochs: int = 3, **kw) -> TrainSettings:
    base = {"epochs": epochs, "device": "cpu", "progress": False, "batch_size": 2, "lr": 1e-2}
    base["hparams"] = {**TINY, "augment": False}
    base["max_slices_per_epoch"] = 4
    return TrainSettings(**(base | kw))


def test_trains_with_falling_loss_and_reloads(store, tmp_path):
    losses: list[float] = []
    summary = train(
        "unet3d", store, tmp_path / "r", settings(epochs=4),
        on_epoch=lambda e, m: losses.append(m["train_loss"]),
    )  # fmt: skip
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert summary["model"] == "unet3d" and summary["n_params"] > 0
    model = load_run(tmp_path / "r", device="cpu", which="latest")
    volume = np.asarray(model_input(store), np.float32)
    labels = model_labels(model, volume)
    assert labels.shape == volume.shape and labels.dtype == np.uint8


def model_input(store):
    from amoseg.store.slice_store import SliceStore

    return SliceStore(store).image("amos_0005")


def test_resume_continues_exactly(store, tmp_path):
    s = settings(epochs=2, hparams=TINY)  # with augmentation: its RNG must resume too
    full = train("unet3d", store, tmp_path / "full", s)

    def crash(epoch, metrics):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train("unet3d", store, tmp_path / "cut", s, on_epoch=crash)
    resumed = train("unet3d", store, tmp_path / "cut", s, resume=True)
    assert resumed["train_loss"] == full["train_loss"] and resumed["val_miou"] == full["val_miou"]
    a = load_checkpoint(tmp_path / "full" / "checkpoint_latest.pt")["state"]
    b = load_checkpoint(tmp_path / "cut" / "checkpoint_latest.pt")["state"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())


def test_cli_contract_with_a_fold(store, tmp_path):
    run = tmp_path / "fold1"
    args = ["train", "unet3d", "--data", str(store), "--out", str(run), "--fold", "1",
            "--epochs", "1", "--max-slices", "2", "--hparams", json.dumps({"base": 8}),
            "--device", "cpu", "--workers", "0"]  # fmt: skip
    main(args)
    config = read_json(run / "config.json")
    assert config["settings"]["fold"] == 1 and config["hparams"]["base"] == 8
    folds = read_json(store / "splits.json")["folds"]
    assert folds[1]["val"]  # validated on fold 1's own cases
    with pytest.raises(SystemExit) as exc:
        main([*args[:6], "--fold", "7", "--device", "cpu"])
    assert exc.value.code == 2


def test_augmentation_keeps_shapes_and_is_seeded():
    x = torch.randn(2, 1, 8, 16, 16)
    y = torch.randint(0, 16, (2, 8, 16, 16))
    a = augment_patches(x, y, torch.Generator().manual_seed(3), lr_dim=1)
    b = augment_patches(x, y, torch.Generator().manual_seed(3), lr_dim=1)
    assert a[0].shape == x.shape and a[1].shape == y.shape and a[1].dtype == torch.int64
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_deep_supervision_weights_and_strides():
    assert deep_supervision_weights(1) == [1.0]
    w = deep_supervision_weights(4)  # nnU-Net's: the lowest-resolution output weighs 0
    assert abs(sum(w) - 1) < 1e-12 and w[0] == 2 * w[1] == 4 * w[2] and w[3] == 0
    assert stage_strides([8, 32, 32], 4) == [[1, 1, 1], [2, 2, 2], [1, 2, 2], [1, 2, 2]]


def symmetric_volume(shape=(8, 16, 16), lr=1) -> torch.Tensor:
    """CT-like intensities, exactly symmetric under a mirror along `lr`."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(shape, generator=g) * 300
    return (v + v.flip(lr)) / 2


def test_tta_is_exactly_left_right_symmetric_on_a_symmetric_case():
    torch.manual_seed(0)
    model = create_model("unet3d", **TINY).to("cpu")
    volume = symmetric_volume()  # one patch: the sliding window has one tile
    lr = int(model.hparams["lr_axis"])
    plain = model.volume_scores(volume)  # (Z, K, H, W): spatial axis a ≥ 1 is dim a + 1

    def mirrored(p):
        return mirror_scores(p, [lr + 1], lr + 1, class_dim=1)

    # a random network is not symmetric by itself: without TTA the test could fail
    assert not torch.allclose(plain, mirrored(plain), atol=1e-3)
    tta = model.volume_scores(volume, tta=True)
    torch.testing.assert_close(tta, mirrored(tta), atol=1e-6, rtol=0)
    torch.testing.assert_close(tta.sum(1), torch.ones(plain[:, 0].shape), atol=1e-5, rtol=0)


def test_sliding_window_covers_volumes_larger_and_smaller_than_a_patch():
    torch.manual_seed(0)
    model = create_model("unet3d", **TINY).to("cpu")
    for shape in [(20, 24, 40), (5, 16, 9)]:
        probs = model.volume_scores(torch.randn(shape) * 200)
        assert probs.shape == (shape[0], 16, *shape[1:])
        torch.testing.assert_close(probs.sum(1), torch.ones(shape), atol=1e-5, rtol=0)


def test_predict_cli_runs_the_sliding_window_with_and_without_tta(store, tmp_path):
    import nibabel as nib

    from amoseg.store.slice_store import SliceStore

    run = tmp_path / "r"
    train("unet3d", store, run, settings(epochs=1))
    volume = np.asarray(SliceStore(store).image("amos_0005"))  # (Z, X, Y) on the RAS+ grid
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(volume.transpose(1, 2, 0)), np.eye(4)), scan)
    for flag in ("--no-tta", "--tta"):
        out = tmp_path / flag.strip("-")
        main(["predict", str(run), str(scan), "-o", str(out), "--device", "cpu", flag,
              "--precision", "fp32"])  # fmt: skip
        seg = np.asarray(nib.load(out / "scan_seg.nii.gz").dataobj)
        assert seg.shape == (32, 32, 12) and seg.dtype == np.uint8
    model = load_run(run, device="cpu")
    expected = model_labels(model, volume).transpose(1, 2, 0)
    plain = np.asarray(nib.load(tmp_path / "no-tta" / "scan_seg.nii.gz").dataobj)
    assert (plain == expected).mean() > 0.999  # the network and window of validation
