"""Model packages: export a run as one .amoseg.zip, predict and load from it, refuse bad ones."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import amoseg
from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.inference.package import (
    MANIFEST,
    PACKAGE_FORMAT_VERSION,
    export_package,
    read_package,
)
from amoseg.inference.segmenter import Segmenter, SegmentOptions
from tests.test_api import small_ct


@pytest.fixture(scope="module")
def package(tiny_unet_run: Path, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("pkg") / "tiny.amoseg.zip"
    main(["export", str(tiny_unet_run), "--package", str(target)])
    return target


def test_package_holds_inference_weights_card_and_no_local_paths(package, tiny_unet_run):
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read(MANIFEST))
        card = json.loads(zf.read("model_card.json"))
        markdown = zf.read("model_card.md").decode()
        ckpt = torch.load(io.BytesIO(zf.read("members/0/checkpoint.pt")), weights_only=True)
        text = b"".join(zf.read(n) for n in names if n.endswith(".json")).decode()
    assert names == {MANIFEST, "model_card.json", "model_card.md",
                     "members/0/checkpoint.pt", "members/0/config.json"}  # fmt: skip
    assert manifest["format_version"] == PACKAGE_FORMAT_VERSION
    assert manifest["amoseg_version"] == amoseg.__version__
    assert set(ckpt) <= {"format", "model", "hparams", "input_size", "state", "epoch", "metrics"}
    assert "optimizer" not in ckpt and "config" not in ckpt
    assert str(tiny_unet_run.parent) not in text  # the store's location stays behind
    assert card["model"] == "unet" and card["members"] == 1
    assert card["labels"]["6"] == "liver"
    assert "val_miou" in card["metrics"][0]["validation"]
    assert card["training_data"]["cases"] == {"train": 2, "val": 1, "test": 1}
    assert "val_miou" in markdown and "# amoseg model: unet" in markdown


def test_predict_from_package_equals_predict_from_run(package, tiny_unet_run, realdata, tmp_path):
    scan = realdata / "example_ct" / "ct.nii.gz"
    main(["predict", str(tiny_unet_run), str(scan), "-o", str(tmp_path / "run")])
    main(["predict", str(package), str(scan), "-o", str(tmp_path / "pkg")])
    a = np.asarray(nib.load(str(tmp_path / "run" / "ct_seg.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "pkg" / "ct_seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(a, b)
    model = amoseg.load(package, device="cpu")
    assert model.card["model"] == "unet"
    small = small_ct(tmp_path / "small.nii.gz")
    from_run = amoseg.load(tiny_unet_run, device="cpu").segment(small).label
    np.testing.assert_array_equal(model.segment(small).label.dataobj, from_run.dataobj)


def test_synthetic_training_shows_on_the_card(tmp_path):
    from tests.predict_models import make_tiny_store

    store = make_tiny_store(tmp_path)
    meta = json.loads((store / "store.json").read_text())
    (store / "store.json").write_text(json.dumps({**meta, "synthetic": True}))
    from amoseg.inference.package import model_card_markdown, training_data

    data = training_data({"store": {"path": str(store), "size": 32}})
    assert data["synthetic"] is True
    card = {
        "model": "unet", "members": 1, "input_size": 32, "hparams": {}, "amoseg_version": "x",
        "intended_use": "research", "training_data": data, "metrics": [], "labels": {},
    }  # fmt: skip
    assert "synthetic phantoms" in model_card_markdown(card)


def _rewrite(source: Path, target: Path, change) -> Path:
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            name, data = change(info.filename, zin.read(info))
            if name is not None:
                zout.writestr(name, data)
    return target


def _one_line_error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_newer_format_corrupt_and_foreign_packages_fail_in_one_line(
    package, realdata, tmp_path, capsys
):
    scan = str(realdata / "example_ct" / "ct.nii.gz")

    def newer(name, data):
        if name == MANIFEST:
            data = json.dumps({**json.loads(data), "format_version": 99}).encode()
        return name, data

    err = _one_line_error(["predict", str(_rewrite(package, tmp_path / "n.amoseg.zip", newer)),
                           scan, "-o", str(tmp_path / "o")], capsys)  # fmt: skip
    assert "format 99 is newer" in err and "upgrade amoseg" in err

    truncated = tmp_path / "t.amoseg.zip"
    truncated.write_bytes(package.read_bytes()[: package.stat().st_size // 2])
    err = _one_line_error(["predict", str(truncated), scan, "-o", str(tmp_path / "o")], capsys)
    assert "corrupt" in err

    flipped = bytearray(package.read_bytes())
    with zipfile.ZipFile(package) as zf:
        info = zf.getinfo("members/0/checkpoint.pt")
    flipped[info.header_offset + 200] ^= 0xFF  # inside the stored weights: CRC mismatch
    damaged = tmp_path / "d.amoseg.zip"
    damaged.write_bytes(bytes(flipped))
    err = _one_line_error(["predict", str(damaged), scan, "-o", str(tmp_path / "o")], capsys)
    assert "corrupt" in err

    foreign = tmp_path / "f.amoseg.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("readme.txt", "hello")
    err = _one_line_error(["predict", str(foreign), scan, "-o", str(tmp_path / "o")], capsys)
    assert "unexpected entry" in err
    assert not (tmp_path / "o").exists()

    with pytest.raises(AmosegError, match="not found"):
        amoseg.load(tmp_path / "missing.amoseg.zip")


def test_path_traversal_members_are_refused_and_nothing_is_written(package, tmp_path):
    def evil(name, data):
        return ("members/0/../../../evil.pt" if name.endswith("checkpoint.pt") else name), data

    crafted = _rewrite(package, tmp_path / "e.amoseg.zip", evil)
    before = set(Path(tmp_path).parent.iterdir())
    with pytest.raises(AmosegError, match="unexpected entry"):
        read_package(crafted)
    assert set(Path(tmp_path).parent.iterdir()) == before
    assert not any(p.name == "evil.pt" for p in tmp_path.parent.parent.rglob("evil.pt"))


def test_an_ensemble_package_holds_every_member(tiny_unet_run, tmp_path, realdata, capsys):
    target = tmp_path / "folds.amoseg.zip"
    card = export_package([tiny_unet_run, tiny_unet_run], target)
    assert card["members"] == 2 and len(card["metrics"]) == 2
    package = read_package(target)
    assert len(package.checkpoints) == 2 and package.manifest["members"] == [
        "members/0",
        "members/1",
    ]
    first, second = (c["state"].values() for c in package.checkpoints)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    scan = small_ct(tmp_path / "small.nii.gz")
    single = amoseg.load(tiny_unet_run, device="cpu").segment(scan).label
    ensemble = amoseg.load(target, device="cpu")
    assert isinstance(ensemble.backend, list) and len(ensemble.backend) == 2
    # the ensemble averages probabilities on the scan's grid; the single model takes the
    # label arg-max slab by slab: the same up to ties and border rounding
    averaged = np.asarray(ensemble.segment(scan).label.dataobj)
    assert (averaged == np.asarray(single.dataobj)).mean() > 0.99
    main(["predict", str(target), str(scan), "-o", str(tmp_path / "o")])
    cli = np.asarray(nib.load(str(tmp_path / "o" / "small_seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(cli, averaged)


def test_export_refuses_overwrite_and_bad_names(tiny_unet_run, tmp_path, capsys):
    target = tmp_path / "m.amoseg.zip"
    target.write_bytes(b"mine")
    err = _one_line_error(["export", str(tiny_unet_run), "--package", str(target)], capsys)
    assert "exists" in err and target.read_bytes() == b"mine"
    err = _one_line_error(["export", str(tiny_unet_run), "--package", str(tmp_path / "m.zip")],
                          capsys)  # fmt: skip
    assert ".amoseg.zip" in err
    err = _one_line_error(["export", str(tiny_unet_run)], capsys)
    assert "exactly one of" in err


def test_a_phantom_trained_run_says_so_on_card_and_in_predict(tiny_unet_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "phantom_run"
    shutil.copytree(tiny_unet_run, run)
    config = json.loads((run / "config.json").read_text())
    config["store"]["synthetic"] = True  # what training records for `amoseg synth` data
    (run / "config.json").write_text(json.dumps(config))
    target = tmp_path / "phantom.amoseg.zip"
    main(["export", str(run), "--package", str(target)])
    assert "trained on synthetic data" in capsys.readouterr().out
    with zipfile.ZipFile(target) as zf:
        assert json.loads(zf.read("model_card.json"))["training_data"]["synthetic"] is True
        assert "Trained on synthetic phantoms" in zf.read("model_card.md").decode()
    main(["predict", str(target), str(small_ct(tmp_path / "s.nii.gz")), "-o", str(tmp_path / "o")])
    assert "synthetic phantoms" in capsys.readouterr().err


def _with_manifest(package: Path, target: Path, **fields) -> Path:
    def change(name, data):
        if name == MANIFEST:
            data = json.dumps({**json.loads(data), **fields}).encode()
        return name, data

    return _rewrite(package, target, change)


def _with_entry(package: Path, target: Path, entry: str, data: bytes) -> Path:
    """The package with `entry` replaced by (or, when absent, added as) `data`."""
    _rewrite(package, target, lambda name, old: (None if name == entry else name, old))
    with zipfile.ZipFile(target, "a") as zf:
        zf.writestr(entry, data)
    return target


def _with_checkpoint(package: Path, target: Path, **fields) -> Path:
    import io

    import torch

    def change(name, data):
        if name == "members/0/checkpoint.pt":
            ckpt = torch.load(io.BytesIO(data), weights_only=True)
            buffer = io.BytesIO()
            torch.save({**ckpt, **fields}, buffer)
            data = buffer.getvalue()
        return name, data

    return _rewrite(package, target, change)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p, t: _with_manifest(p, t, members="members/0"), "member list is not a list"),
        (lambda p, t: _with_manifest(p, t, members=["members/0"] * 40), "more than once"),
        (lambda p, t: _with_manifest(p, t, members=[f"members/{i}" for i in range(80)]),
         "80 members"),
        (lambda p, t: _with_entry(p, t, "model_card.json", b"[1, 2]"), "not an object"),
        (lambda p, t: _with_entry(p, t, "model_card.json", b"[" * 100_000 + b"]" * 100_000),
         "not valid JSON"),
        (lambda p, t: _with_entry(p, t, "model_card.json", b" " * (5 << 20) + b"{}"),
         "implausibly large"),
        (lambda p, t: _with_entry(p, t, "members/0/postprocessing.json",
                                  b'{"lcc_organs": ["liver"]}'), "lcc_organs"),
        (lambda p, t: _with_checkpoint(p, t, input_size=10**9), "input size"),
        (lambda p, t: _with_checkpoint(p, t, hparams={"base": 1024, "depth": 10}),
         "parameters"),
    ],
    ids=["members-not-list", "member-40-times", "too-many-members", "card-not-object",
         "deep-json", "huge-json", "bad-postprocessing", "absurd-input-size", "absurd-network"],
)  # fmt: skip
def test_hostile_packages_are_refused_before_anything_runs(package, tmp_path, damage, message):
    """Each is one line, raised before a model is built or memory is taken (a 1024-base,
    depth-10 U-Net would ask for hundreds of GB)."""
    bad = damage(package, tmp_path / "bad.amoseg.zip")
    with pytest.raises(AmosegError, match=message):
        Segmenter.open(bad, SegmentOptions(device="cpu"))
