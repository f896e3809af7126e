"""nnU-Net v2 model folders exported as model packages (member kind `nnunet`, format 3) and
compared beside amoseg's own runs: the package predicts exactly what the folder predicts, its
card names the source model and its licence honestly, a crafted package is refused in one line,
and `compare` shows organs a model does not cover as not covered, never as 0.

Fast: tiny random-weight folders written without nnU-Net (tests/nnunet_tiny_folder.py). The
same round trip on folders made by nnU-Net's own planner and trainer: test_nnunet_parity's
fixture, at the end (slow)."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import amoseg
from amoseg.atomic import read_json, write_json
from amoseg.cli.main import main
from amoseg.errors import AmosegError
from amoseg.inference.bundle import read_bundles
from amoseg.inference.package import (
    NNUNET_FORMAT_VERSION,
    READABLE_FORMAT_VERSION,
    export_package,
    read_package,
)
from amoseg.inference.segmenter import Segmenter, SegmentOptions
from amoseg.labels import CLASS_NAMES
from tests.nnunet_tiny_folder import make_model_folder
from tests.test_evaluate import fake_training  # noqa: F401 (fixture)
from tests.test_nnunet_cascade import make_cascade
from tests.test_nnunet_cascade import scan as cascade_scan
from tests.test_nnunet_models import MRSEG, TOTALSEG_TOTAL, scan

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def labels_of(model: Path | list[Path], image: nib.Nifti1Image) -> np.ndarray:
    segmenter = Segmenter.open(model, SegmentOptions(device="cpu"))
    return segmenter.labels(np.asanyarray(image.dataobj), image.affine)


def cli_error(args: list[str], capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_package_predicts_the_folders_labels_and_carries_the_model(tmp_path, capsys):
    folder = make_model_folder(tmp_path, MRSEG, folds=(0, 1, 2))
    package = tmp_path / "m.amoseg.zip"
    main(["export", str(folder), "--package", str(package), "--folds", "0,2"])
    out = capsys.readouterr().out
    assert "licence: unknown — check the source" in out and "prostate/uterus" in out
    with zipfile.ZipFile(package) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("amoseg-package.json"))
        config = json.loads(zf.read("members/0/config.json"))
        assert zf.read("members/0/plans.json") == (folder / "plans.json").read_bytes()
        slim = torch.load(io.BytesIO(zf.read("members/0/fold_2/checkpoint_final.pth")))
    assert names == {"amoseg-package.json", "model_card.json", "model_card.md",
                     "members/0/config.json", "members/0/dataset.json", "members/0/plans.json",
                     "members/0/fold_0/checkpoint_final.pth",
                     "members/0/fold_2/checkpoint_final.pth"}  # fmt: skip
    assert manifest["format_version"] == NNUNET_FORMAT_VERSION == 3
    assert config["kind"] == "nnunet" and list(config["folds"]) == ["0", "2"]
    assert "optimizer_state" not in slim and "logging" not in slim  # inference weights only
    assert slim["inference_allowed_mirroring_axes"] == (0, 1, 2)
    original = torch.load(folder / "fold_2" / "checkpoint_final.pth", weights_only=False)
    for key, value in original["network_weights"].items():
        assert torch.equal(slim["network_weights"][key], value), key

    card = read_package(package).card
    assert card["kind"] == "nnunet" and card["model"] == "Dataset999_Tiny 3d_fullres"
    assert card["licence"] == "unknown — check the source" and card["licence_from"] is None
    assert card["not_covered"] == ["prostate/uterus"] and len(card["covered_organs"]) == 14

    image = nib.load(scan(tmp_path / "ct.nii.gz"))
    # the folder with the same folds: a copy without fold_1
    chosen = tmp_path / "chosen" / folder.name
    chosen.mkdir(parents=True)
    for name in ("dataset.json", "plans.json", "fold_0", "fold_2"):
        (chosen / name).symlink_to(folder / name)
    from_folder = labels_of(chosen, image)
    assert len(np.unique(from_folder)) > 1  # random weights still give several organs
    np.testing.assert_array_equal(labels_of(package, image), from_folder)
    assert not np.array_equal(labels_of(folder, image), from_folder)  # the folds matter
    model = amoseg.load(package, device="cpu")
    assert model.card["model"] == card["model"] and model.backend.covered == frozenset(
        card["covered_organs"]
    )
    result = model.segment(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(np.asarray(result.label.dataobj), from_folder)
    with pytest.raises(AmosegError, match="not covered"):
        result.volume_ml("prostate/uterus")


def test_predict_cli_from_package_equals_folder_and_ensembles_with_a_run(
    tmp_path, tiny_unet_run, capsys
):
    folder = make_model_folder(tmp_path, MRSEG)
    package = tmp_path / "m.amoseg.zip"
    main(["export", str(folder), "--package", str(package)])
    image = scan(tmp_path / "ct.nii.gz")
    for name, model in (("folder", folder), ("package", package)):
        main(["predict", str(model), str(image), "-o", str(tmp_path / name), "--device", "cpu"])
    seg = [
        np.asanyarray(nib.load(tmp_path / n / "ct_seg.nii.gz").dataobj)
        for n in ("folder", "package")
    ]
    np.testing.assert_array_equal(seg[0], seg[1])
    assert "not covered by the model (no volumes): prostate/uterus" in capsys.readouterr().err
    # an ensemble of the nnU-Net package with one of amoseg's own runs
    main(["predict", str(package), str(tiny_unet_run), str(image), "-o", str(tmp_path / "mix"),
          "--device", "cpu"])  # fmt: skip
    mixed = np.asanyarray(nib.load(tmp_path / "mix" / "ct_seg.nii.gz").dataobj)
    assert mixed.shape == seg[0].shape
    assert {type(b).__name__ for b in read_bundles(package) + read_bundles(tiny_unet_run)} == {
        "NnunetBundle",
        "ModelBundle",
    }


def test_card_takes_the_catalogue_licence_else_the_exporters_else_unknown(tmp_path, capsys):
    folder = make_model_folder(tmp_path, TOTALSEG_TOTAL)
    plans = json.loads((folder / "plans.json").read_text())
    plans["dataset_name"] = "Dataset297_TotalSegmentator_total_3mm_1559subj"
    (folder / "plans.json").write_text(json.dumps(plans))
    card = export_package([folder], tmp_path / "ts.amoseg.zip")
    assert card["model"] == "totalseg-total-3mm" and card["licence"] == "Apache-2.0"
    assert "amoseg models" in card["licence_from"] and card["not_covered"] == []
    assert (
        "Apache-2.0" in zipfile.ZipFile(tmp_path / "ts.amoseg.zip").read("model_card.md").decode()
    )
    err = cli_error(["export", str(folder), "--package", str(tmp_path / "x.amoseg.zip"),
                     "--licence", "MIT"], capsys)  # fmt: skip
    assert "contradicts" in err and "Apache-2.0" in err
    assert not (tmp_path / "x.amoseg.zip").exists()

    own = make_model_folder(tmp_path / "own", MRSEG[:6])
    card = export_package([own], tmp_path / "own.amoseg.zip", licence="CC-BY-4.0",
                          citation="Doe et al. 2026")  # fmt: skip
    assert card["licence"] == "CC-BY-4.0" and card["licence_from"] == "the exporter (--licence)"
    assert card["citation"] == "Doe et al. 2026"


def test_a_fetched_model_keeps_its_catalogue_name_and_class_map(tmp_path, monkeypatch):
    from amoseg.nnunet_models.fetch import fetch_model

    made = make_model_folder(tmp_path / "make", TOTALSEG_TOTAL)
    plans = json.loads((made / "plans.json").read_text())
    plans["dataset_name"] = "Dataset123_Renamed"  # no match by name: only the install record
    (made / "plans.json").write_text(json.dumps(plans))
    archive = tmp_path / "m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(made.parent.rglob("*")):
            zf.write(path, path.relative_to(made.parent.parent).as_posix())
    monkeypatch.setenv("AMOSEG_HOME", str(tmp_path / "home"))
    installed, _ = fetch_model("totalseg-total-6mm", from_zip=archive)
    card = export_package([installed], tmp_path / "ts.amoseg.zip")
    assert card["model"] == "totalseg-total-6mm" and card["licence"] == "Apache-2.0"
    image = nib.load(scan(tmp_path / "ct.nii.gz"))
    np.testing.assert_array_equal(labels_of(tmp_path / "ts.amoseg.zip", image),
                                  labels_of(installed, image))  # fmt: skip


def rewrite(package: Path, target: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of `package` with entries replaced (bytes), removed (None) or added."""
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            if info.filename not in change:
                dst.writestr(info, src.read(info))
        for name, data in change.items():
            if data is not None:
                dst.writestr(name, data)
    return target


@pytest.fixture(scope="module")
def nnunet_package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nnpkg")
    folder = make_model_folder(root, MRSEG[:4])
    export_package([folder], root / "m.amoseg.zip")
    return root / "m.amoseg.zip"


def member_config(package: Path, **changes) -> bytes:
    config = json.loads(zipfile.ZipFile(package).read("members/0/config.json"))
    return json.dumps({**config, **changes}).encode()


def test_crafted_nnunet_members_are_refused_in_one_line(nnunet_package, tmp_path):
    bad_ckpt = io.BytesIO()
    torch.save({"network_weights": {}, "hook": os.system}, bad_ckpt)
    cases = {
        "foreign global": ({"members/0/fold_0/checkpoint_final.pth": bad_ckpt.getvalue()},
                           "posix.system"),
        "traversal": ({"members/0/config.json": member_config(
            nnunet_package, folds={"0": "../../etc/passwd"})}, "bad fold entry"),
        "unknown kind": ({"members/0/config.json": member_config(nnunet_package, kind="onnx")},
                         "upgrade amoseg"),
        "no plans": ({"members/0/plans.json": None}, "lacks members/0/plans.json"),
        "no such configuration": ({"members/0/config.json": member_config(
            nnunet_package, configuration="3d_cascade_fullres")}, "no configuration"),
        "bad json": ({"members/0/dataset.json": b"{nope"}, "not valid JSON"),
        "odd entry": ({"members/0/fold_0/evil.py": b"x"}, "unexpected entry"),
    }  # fmt: skip
    for what, (change, words) in cases.items():
        crafted = rewrite(nnunet_package, tmp_path / f"{what}.amoseg.zip", change)
        with pytest.raises(AmosegError) as info:
            read_bundles(crafted)
        line = info.value.line()
        assert words in line and "\n" not in line, (what, line)


# --- a 3d_cascade_fullres folder with its 3d_lowres stage -----------------------------------


def test_cascade_package_carries_its_lowres_stage_and_predicts_the_folders_labels(tmp_path):
    lowres, cascade = make_cascade(tmp_path, folds=(0, 1))
    package = tmp_path / "c.amoseg.zip"
    main(["export", str(cascade), "--package", str(package)])
    with zipfile.ZipFile(package) as zf:
        assert "runs its 3d_lowres stage first" in zf.read("model_card.md").decode()
        names = set(zf.namelist())
        config = json.loads(zf.read("members/0/config.json"))
        assert zf.read("members/0/previous/plans.json") == (lowres / "plans.json").read_bytes()
        slim = torch.load(io.BytesIO(zf.read("members/0/previous/fold_1/checkpoint_final.pth")))
    assert {n for n in names if "/previous/" in n} == {
        "members/0/previous/dataset.json", "members/0/previous/plans.json",
        "members/0/previous/fold_0/checkpoint_final.pth",
        "members/0/previous/fold_1/checkpoint_final.pth",
    }  # fmt: skip
    assert config["configuration"] == "3d_cascade_fullres"
    assert config["previous"]["configuration"] == "3d_lowres"
    low = torch.load(lowres / "fold_1" / "checkpoint_final.pth", weights_only=False)
    for key, value in low["network_weights"].items():  # the low-res stage's, not the cascade's
        assert torch.equal(slim["network_weights"][key], value), key
    assert "optimizer_state" not in slim

    image = cascade_scan(tmp_path / "ct.nii.gz")
    for name, model in (("folder", cascade), ("package", package)):
        main(["predict", str(model), str(image), "-o", str(tmp_path / name), "--device", "cpu"])
    folder_seg, package_seg = (
        np.asanyarray(nib.load(tmp_path / n / "ct_seg.nii.gz").dataobj)
        for n in ("folder", "package")
    )
    assert len(np.unique(folder_seg)) > 1
    np.testing.assert_array_equal(package_seg, folder_seg)
    model = amoseg.load(package, device="cpu")
    assert model.backend.previous is not None
    np.testing.assert_array_equal(np.asarray(model.segment(image).label.dataobj), folder_seg)

    # --folds: the cascade's folds, and the same of its 3d_lowres stage
    one = export_package([cascade], tmp_path / "one.amoseg.zip", folds=["1"])
    assert one["sources"][0]["previous"]["folds"] == {"1": "previous/fold_1/checkpoint_final.pth"}
    assert (
        "members/0/previous/fold_0/checkpoint_final.pth"
        not in zipfile.ZipFile(tmp_path / "one.amoseg.zip").namelist()
    )


def test_a_cascade_without_its_lowres_stage_is_not_exported(tmp_path, capsys):
    lowres, cascade = make_cascade(tmp_path)
    shutil.rmtree(lowres)
    target = tmp_path / "c.amoseg.zip"
    err = cli_error(["export", str(cascade), "--package", str(target)], capsys)
    assert "exported with its 3d_lowres stage" in err and str(lowres) in err, err
    assert not target.exists() and not list(tmp_path.glob("*.tmp*"))


def test_a_lowres_stage_kept_elsewhere_is_named_with_previous_stage(tmp_path, capsys):
    """--previous-stage DIR: predict, load and export find a cascade's 3d_lowres folder that
    is not its sibling; the package carries it and predicts the same labels."""
    lowres, cascade = make_cascade(tmp_path)
    moved = tmp_path / "elsewhere" / "my_lowres"
    moved.parent.mkdir()
    lowres.rename(moved)
    image = cascade_scan(tmp_path / "ct.nii.gz")
    args = ["--device", "cpu", "--previous-stage", str(moved)]
    main(["predict", str(cascade), str(image), "-o", str(tmp_path / "folder"), *args])
    folder_seg = np.asanyarray(nib.load(tmp_path / "folder" / "ct_seg.nii.gz").dataobj)
    api = amoseg.load(cascade, device="cpu", previous_stage=moved).segment(image)
    api_seg = np.asanyarray(api.label.dataobj)
    np.testing.assert_array_equal(api_seg, folder_seg)
    package = tmp_path / "c.amoseg.zip"
    main(["export", str(cascade), "--package", str(package), "--previous-stage", str(moved)])
    with zipfile.ZipFile(package) as zf:
        assert zf.read("members/0/previous/plans.json") == (moved / "plans.json").read_bytes()
    main(["predict", str(package), str(image), "-o", str(tmp_path / "pkg"), "--device", "cpu"])
    package_seg = np.asanyarray(nib.load(tmp_path / "pkg" / "ct_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(package_seg, folder_seg)
    capsys.readouterr()

    # without it the sibling is missing: the line names the option
    err = cli_error(["predict", str(cascade), str(image), "-o", str(tmp_path / "x"),
                     "--device", "cpu"], capsys)  # fmt: skip
    assert "--previous-stage" in err and not (tmp_path / "x").exists()
    # on a package, a folder that is no cascade, or with --onnx: one line, nothing written
    single = make_model_folder(tmp_path / "single", MRSEG)
    wrong = {
        "package": ["predict", str(package), str(image), "-o", str(tmp_path / "y"), *args],
        "no cascade": ["predict", str(single), str(image), "-o", str(tmp_path / "y"), *args],
        "onnx": ["export", str(cascade), "--onnx", str(tmp_path / "y.onnx"),
                 "--previous-stage", str(moved)],
        "export no cascade": ["export", str(single), "--package", str(tmp_path / "y.amoseg.zip"),
                              "--previous-stage", str(moved)],
    }  # fmt: skip
    for what, cmd in wrong.items():
        err = cli_error(cmd, capsys)
        assert "previous" in err.lower(), (what, err)
    assert not list(tmp_path.glob("y*"))


@pytest.fixture(scope="module")
def cascade_package(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cascadepkg")
    _, cascade = make_cascade(root, folds=(0, 1))
    export_package([cascade], root / "c.amoseg.zip")
    return root / "c.amoseg.zip"


def test_crafted_cascade_members_are_refused_in_one_line(cascade_package, tmp_path):
    with zipfile.ZipFile(cascade_package) as zf:
        prev = json.loads(zf.read("members/0/config.json"))["previous"]
        dataset = json.loads(zf.read("members/0/dataset.json"))
        single = json.loads(zf.read("members/0/plans.json"))
    other_labels = {**dataset, "labels": {"background": 0, "liver": 1, "spleen": 2,
                                          "pancreas": 3}}  # fmt: skip
    del single["configurations"]["3d_cascade_fullres"]["previous_stage"]
    cases = {
        "no previous": ({"members/0/config.json": member_config(cascade_package, previous=None)},
                        "without its 3d_lowres stage"),
        "other folds": ({"members/0/config.json": member_config(cascade_package, previous={
            **prev, "folds": {"0": prev["folds"]["0"]}})}, "other folds than the cascade"),
        "traversal": ({"members/0/config.json": member_config(cascade_package, previous={
            **prev, "folds": {"0": "fold_0/checkpoint_final.pth",
                              "1": "previous/../fold_1/checkpoint_final.pth"}})},
                      "bad fold entry"),
        "wrong stage": ({"members/0/config.json": member_config(cascade_package, previous={
            **prev, "configuration": "3d_fullres"})}, "not the 3d_lowres"),
        "no stage plans": ({"members/0/previous/plans.json": None},
                           "lacks members/0/previous/plans.json"),
        "other labels": ({"members/0/previous/dataset.json": json.dumps(other_labels).encode()},
                         "other labels than the cascade"),
        "single stage": ({"members/0/plans.json": json.dumps(single).encode()},
                         "no cascade stage but carries"),
        "odd entry": ({"members/0/previous/fold_0/x.pth": b"x"}, "unexpected entry"),
    }  # fmt: skip
    for what, (change, words) in cases.items():
        crafted = rewrite(cascade_package, tmp_path / f"{what}.amoseg.zip", change)
        with pytest.raises(AmosegError) as info:
            read_bundles(crafted)
        line = info.value.line()
        assert words in line and "\n" not in line, (what, line)
    [bundle] = read_bundles(cascade_package)
    assert bundle.packed.previous.configuration == "3d_lowres"


def test_format_3_reads_and_a_newer_one_is_refused(nnunet_package, tmp_path):
    manifest = json.loads(zipfile.ZipFile(nnunet_package).read("amoseg-package.json"))
    future = {**manifest, "format_version": READABLE_FORMAT_VERSION + 1}
    crafted = rewrite(nnunet_package, tmp_path / "f.amoseg.zip",
                      {"amoseg-package.json": json.dumps(future).encode()})  # fmt: skip
    with pytest.raises(AmosegError, match="newer than this amoseg reads"):
        read_bundles(crafted)
    [bundle] = read_bundles(nnunet_package)
    assert bundle.name == f"{nnunet_package}!members/0"


def test_mixed_kinds_onnx_and_folds_misuse_each_give_one_line(tmp_path, tiny_unet_run, capsys):
    folder = make_model_folder(tmp_path, MRSEG[:4])
    target = tmp_path / "m.amoseg.zip"
    err = cli_error(["export", str(folder), str(tiny_unet_run), "--package", str(target)], capsys)
    assert "either amoseg runs or nnU-Net model folders" in err
    err = cli_error(["export", str(folder), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert "ONNX export of an nnU-Net model is not supported" in err
    err = cli_error(["export", str(folder), "--package", str(target), "--folds", "7"], capsys)
    assert "no fold 7" in err
    err = cli_error(["export", str(tiny_unet_run), "--package", str(target), "--folds", "0"],
                    capsys)  # fmt: skip
    assert "--folds picks folds of an nnU-Net model folder" in err
    assert not target.exists() and not list(tmp_path.glob("*.tmp*"))


def test_compare_puts_nnunet_folders_beside_a_run_and_marks_organs_not_covered(
    tmp_path,
    fake_training,  # noqa: F811
):
    from amoseg.data.synth import generate_dataset
    from amoseg.reports.compare import compare_runs
    from amoseg.reports.evaluate import evaluate_run
    from amoseg.store.prepare import prepare_dataset
    from tests.test_evaluate import make_run

    generate_dataset(tmp_path / "amos", 4, 0, "demo", progress=False)
    store = tmp_path / "store"
    prepare_dataset(tmp_path / "amos", store, size=16, split=(0.5, 0.25, 0.25), progress=False)
    run = make_run(tmp_path / "runs" / "fake", store)
    write_json(run / "summary.json", {"n_params": 10, "train_seconds": 1.0})
    evaluate_run(run, store, progress=False)
    coarse = (10.0, 8.0, 8.0)  # few tiles: seconds per scan
    partial = make_model_folder(tmp_path / "mr", MRSEG, spacing=coarse)  # 14 of 15 organs
    full = make_model_folder(tmp_path / "ts", TOTALSEG_TOTAL, spacing=coarse)  # all 15
    args = ["--data", str(store), "--device", "cpu"]
    main(["evaluate", str(partial), *args])
    main(["evaluate", str(full), *args])
    package = tmp_path / "mr.amoseg.zip"
    main(["export", str(partial), "--package", str(package)])
    main(["evaluate", str(package), *args, "-o", str(tmp_path / "mr_pkg")])
    result = compare_runs([run, partial, full, tmp_path / "mr_pkg"], tmp_path / "report")

    rows = result["rows"]
    assert [r["organs"] for r in rows] == ["15/15", "14/15", "15/15", "14/15"]
    common = [CLASS_NAMES[i] for i in range(1, 15)]
    sources = [run / "eval_test", partial / "eval_ensemble_test", full / "eval_ensemble_test",
               tmp_path / "mr_pkg"]  # fmt: skip
    for row, where in zip(rows, sources, strict=True):
        per_organ = read_json(where / "metrics.json")["native"]["per_organ"]
        dice = [per_organ[o]["dice"] for o in common if per_organ[o]["dice"] is not None]
        assert row["native_dice"] == pytest.approx(100 * np.mean(dice), abs=0.006), where
    assert rows[3]["native_dice"] == rows[1]["native_dice"]  # the package scores as the folder
    md = result["markdown"].read_text()
    assert "| organ | 1: fake | 2: nnUNetTrainer__" in md  # repeated folder names are numbered
    assert "Native Dice per organ" in md and "the 14 organs every model here covers" in md
    line = next(x for x in md.splitlines() if x.startswith("| prostate/uterus |"))
    cells = [c.strip() for c in line.strip("|").split("|")][1:]
    assert cells[1] == cells[3] == "not covered" and "not covered" not in (cells[0], cells[2])
    csv_text = result["csv"].read_text()
    assert "organs" in csv_text.splitlines()[0] and "14/15" in csv_text
