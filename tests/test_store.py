"""The volume store: planned configurations (2d, 3d), samplers with foreground oversampling,
`create_store`, and the store's safety (source staleness, writer lock, identity, ownership)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from amoseg.errors import AmosegError
from amoseg.planning.planner import seed_configuration
from amoseg.preprocessing import PreprocessRecord
from amoseg.store.prepare import prepare_dataset
from amoseg.store.samplers import PatchDataset, foreground_share
from amoseg.store.slice_store import SliceStore
from amoseg.store.store import LOCK_FILE, check_identity, create_store, store_lock
from tests.conftest import REPO
from tests.test_amos import make_root, write_listing
from tests.test_plan import SPACINGS, write_case


@pytest.fixture(scope="module")
def planned_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("store") / "amos"
    entries = [
        write_case(root, f"amos_{i + 1:04d}", s, las=i % 2 == 1) for i, s in enumerate(SPACINGS)
    ]
    write_listing(root, {"training": entries, "validation": []})
    return root


@pytest.mark.parametrize("name", ["2d", "3d"])
def test_planned_configurations_prepare(planned_root, tmp_path, name):
    out = tmp_path / name
    summary = prepare_dataset(planned_root, out, configuration=name, seed=0, progress=False)
    store = SliceStore(out)
    assert store.configuration_name == name and (out / "plan.json").exists()
    config = store.configuration
    for case_id in [c for s in ("train", "val", "test") for c in store.cases(s)]:
        record = PreprocessRecord.from_dict(store.meta(case_id)["preprocess"])
        image = store.image(case_id)
        assert image.shape == (record.shape[2], record.shape[0], record.shape[1])
        np.testing.assert_allclose(record.spacing[:2], config.spacing[:2], rtol=0.05)
        if name == "3d":
            np.testing.assert_allclose(record.spacing[2], config.spacing[2], rtol=0.2)
        else:  # z kept as it is
            assert record.shape[2] == record.canonical_shape[2]
        assert record.crop[0][1] - record.crop[0][0] < 40  # body crop took air away
    assert summary["total"]["cases"] == 4
    assert store.size is None
    from amoseg.training.data import SliceDataset

    with pytest.raises(AmosegError, match="own plane shapes"):
        SliceDataset(store, "train")


def test_3d_patch_sampler_oversamples_foreground(planned_root, tmp_path):
    out = tmp_path / "3d"
    prepare_dataset(planned_root, out, configuration="3d", seed=0, progress=False)
    store = SliceStore(out)
    patch = (8, 8, 4)  # small next to the organs' distance: random patches often miss them
    ds = PatchDataset(store, "train", patch, length=90, seed=1)
    x, y = ds[0]
    assert x.shape == (1, 4, 8, 8) and y.shape == (4, 8, 8) and x.dtype.is_floating_point is False
    plain = PatchDataset(store, "train", patch, length=90, seed=1, foreground_share=0)
    forced = [i for i in range(90) if ds.forced_foreground(i)]
    assert len(forced) == 30  # one third
    assert all((ds[i][1] > 0).any() for i in forced)
    assert foreground_share(ds) >= foreground_share(plain) + 0.2
    # a pure function of (seed, epoch, index)
    assert np.array_equal(ds[5][0], ds[5][0])
    ds.set_epoch(1)
    assert any(not np.array_equal(ds[i][0], plain[i][0]) for i in range(5))


def test_2d_patches_pad_and_stack_context(planned_root, tmp_path):
    out = tmp_path / "2d"
    prepare_dataset(planned_root, out, configuration="2d", seed=0, progress=False)
    store = SliceStore(out)
    big = (64, 48)  # larger than every cropped plane: padded
    ds = PatchDataset(store, "train", big, context=1, length=12)
    x, y = ds[2]
    assert x.shape == (3, 64, 48) and y.shape == (64, 48)
    assert (y > 0).any()  # the third sample is centred on an organ


def test_seed_prepare_by_size_is_a_seed_store(planned_root, tmp_path):
    prepare_dataset(planned_root, tmp_path / "s", size=24, seed=0, progress=False)
    store = SliceStore(tmp_path / "s")
    assert store.configuration_name == "seed" and store.size == 24
    assert store.configuration.keep == "organ"
    assert json.loads((tmp_path / "s" / "splits.json").read_text()).keys() >= {"train", "val"}


def test_prepare_with_a_plan_file(planned_root, tmp_path):
    from amoseg.planning import make_plan, save_plan

    plan = make_plan(planned_root, size=32, progress=False)
    save_plan(plan, tmp_path / "plan.json")
    prepare_dataset(
        planned_root, tmp_path / "s", plan=tmp_path / "plan.json", configuration="2d",
        progress=False,
    )  # fmt: skip
    assert SliceStore(tmp_path / "s").configuration == plan.configuration("2d")
    bad = json.loads((tmp_path / "plan.json").read_text())
    bad["configurations"]["2d"]["spacing"] = [0, 1, 1]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(AmosegError, match=r"configurations\.2d\.spacing"):
        prepare_dataset(
            planned_root, tmp_path / "t", plan=tmp_path / "bad.json", configuration="2d",
            progress=False,
        )  # fmt: skip
    assert not (tmp_path / "t").exists()


# --- safety ---------------------------------------------------------------------------------


def test_changed_source_is_redone(tmp_path):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003"])
    out = tmp_path / "out"
    prepare_dataset(root, out, size=16, progress=False)
    again = prepare_dataset(root, out, size=16, progress=False)
    assert again["prepared_now"] == 0 and again["reused"] == 3
    image = root / "imagesTr" / "amos_0001.nii.gz"
    stat = image.stat()
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    third = prepare_dataset(root, out, size=16, progress=False)
    assert third["prepared_now"] == 1 and third["reused"] == 2


def test_second_writer_is_refused_in_one_line(tmp_path):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003"])
    out = tmp_path / "out"
    with store_lock(out):
        with pytest.raises(AmosegError, match="another amoseg prepare") as info:
            prepare_dataset(root, out, size=16, progress=False)
        assert str(os.getpid()) in info.value.line() and "\n" not in info.value.line()
    prepare_dataset(root, out, size=16, progress=False)  # released: works
    assert not (out / LOCK_FILE).exists()


def test_second_writer_in_another_process(tmp_path):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003"])
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from amoseg.store.store import store_lock\n"
         "with store_lock(__import__('pathlib').Path(sys.argv[1])):\n"
         "    print('held', flush=True); time.sleep(60)", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AmosegError, match=f"pid {holder.pid}"):
            prepare_dataset(root, out, size=16, progress=False)
    finally:
        holder.kill()
        holder.wait()
    # the holder died without cleaning up: its lock file stays, the OS lock is gone
    assert (out / LOCK_FILE).exists()
    time.sleep(0.1)
    prepare_dataset(root, out, size=16, progress=False)  # a dead pid's lock is taken over


def test_overwrite_never_deletes_folders_it_does_not_own(tmp_path):
    root = make_root(tmp_path / "amos", ["amos_0001", "amos_0002", "amos_0003"])
    out = tmp_path / "out"
    prepare_dataset(root, out, size=16, progress=False)
    foreign = out / "cases" / "my_notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    prepare_dataset(root, out, size=20, progress=False, overwrite=True)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_identity_refuses_another_split(tmp_path):
    image = np.full((12, 12, 4), -50, np.int16)
    label = np.zeros((12, 12, 4), np.uint8)
    label[3:6, 3:6] = 6
    cases = [(f"amos_{i:04d}", image, label, np.eye(4)) for i in range(1, 5)]
    a = SliceStore(create_store(tmp_path / "a", cases))
    b = SliceStore(
        create_store(
            tmp_path / "b", cases, splits={"train": ["amos_0001"], "val": [], "test": ["amos_0002"]}
        )
    )
    check_identity(a.identity(), a.identity(), a.root)
    with pytest.raises(AmosegError, match="splits_sha256"):
        check_identity(a.identity(), b.identity(), b.root)
    c = SliceStore(create_store(tmp_path / "c", cases, configuration=seed_configuration(8)))
    with pytest.raises(AmosegError, match="size 12 → 8"):
        check_identity(a.identity(), c.identity(), c.root)
    check_identity(None, c.identity(), c.root)  # runs from before identities: not checked


def test_create_store_float_images_keep_precision(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((10, 10, 3)).astype(np.float32)
    label = (image > 0.5).astype(np.uint8)
    store = SliceStore(create_store(tmp_path / "s", [("amos_0600", image, label, np.eye(4))]))
    stored = np.asarray(store.image("amos_0600"))
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, np.moveaxis(image, 2, 0))


def test_evaluate_and_resume_refuse_a_store_with_another_identity(tmp_path):
    from tests.badfiles import TRAIN_FAST, amoseg_inprocess
    from tests.tiny_store import make_tiny_store

    a = make_tiny_store(tmp_path / "a", size=16)
    b = make_tiny_store(tmp_path / "b", size=16, split=(1, 2, 1))  # a test case seen in training
    run = tmp_path / "run"
    assert (
        amoseg_inprocess("train", "prior", "--data", a, "--out", run, *TRAIN_FAST).returncode == 0
    )
    recorded = json.loads((run / "config.json").read_text())["store"]["identity"]
    assert recorded == SliceStore(a).identity()
    for argv in (
        ("evaluate", run, "--data", b, "--split", "test", "--device", "cpu"),
        ("train", "prior", "--data", b, "--out", run, "--resume", *TRAIN_FAST),
    ):
        res = amoseg_inprocess(*argv)
        assert res.returncode == 2, res.stderr
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "not the one this run was trained on" in lines[0]


def test_foreground_samples_are_balanced_over_organs(tmp_path):
    """A 2-voxel-wide adrenal beside a big liver is still the centre of about half of the
    foreground samples (an organ is drawn first, then a voxel: nnU-Net)."""
    image = np.full((40, 40, 10), -50, np.int16)
    label = np.zeros((40, 40, 10), np.uint8)
    label[2:32, 2:32, 1:9] = 6
    label[36:38, 36:38, 4:6] = 11
    store = SliceStore(
        create_store(
            tmp_path / "s",
            [("amos_0001", image, label, np.eye(4))],
            splits={"train": ["amos_0001"], "val": [], "test": []},
        )
    )
    ds = PatchDataset(store, "train", (4, 4, 2), length=300, seed=3)
    centres = [int(ds[i][1][1, 2, 2]) for i in range(300) if ds.forced_foreground(i)]
    assert len(centres) == 100 and set(centres) <= {6, 11}
    assert 0.3 < centres.count(11) / len(centres) < 0.7


def test_unet_reads_the_plan_normalisation_of_a_planned_store(planned_root, tmp_path):
    import torch

    from amoseg.models.unet import UNetModern

    prepare_dataset(planned_root, tmp_path / "2d", configuration="2d", seed=0, progress=False)
    prepare_dataset(planned_root, tmp_path / "seed", size=16, seed=0, progress=False)
    planned, seed = SliceStore(tmp_path / "2d"), SliceStore(tmp_path / "seed")
    norm = planned.configuration.normalisation["ct"]
    hparams = UNetModern.store_hparams(planned, {})
    assert hparams == {"norm": "ct", "window": [*norm.clip, norm.mean, norm.std]}
    assert UNetModern.store_hparams(seed, {})["norm"] == "window"
    model = UNetModern(input_size=0, **{"base": 4, **hparams})
    x = torch.linspace(-1200, 400, 50).reshape(1, 1, 5, 10)
    torch.testing.assert_close(model.build_norm()(x), norm.apply(x))
    assert model.body_threshold is None  # the store is cropped already


def test_unet3d_reads_the_plan_normalisation_of_a_3d_store(planned_root, tmp_path):
    """unet3d, like unet, normalises CT with the plan's foreground clip and z-score on a
    planned store, not the fixed HU window; the checkpointed norm reproduces it."""
    import torch

    from amoseg.models.unet3d import UNet3d

    prepare_dataset(planned_root, tmp_path / "3d", configuration="3d", seed=0, progress=False)
    store = SliceStore(tmp_path / "3d")
    norm = store.configuration.normalisation["ct"]
    hparams = UNet3d.store_hparams(store, {"stages": 3})
    assert hparams["norm"] == "ct" and hparams["window"] == [*norm.clip, norm.mean, norm.std]
    model = UNet3d(input_size=0, **{"base": 4, "stages": 3, **hparams})
    x = torch.linspace(-1200, 400, 64).reshape(1, 1, 4, 4, 4)
    torch.testing.assert_close(model.build_norm()(x), norm.apply(x))
