"""One model bundle: a run folder, its package and its ONNX export segment a scan the same
way for every configuration (seed, 2d, 3d); evaluate scores a package as it scores the run."""

from __future__ import annotations

import json
import zipfile

import nibabel as nib
import numpy as np
import pytest

from amoseg.atomic import read_json
from amoseg.cli.main import main
from amoseg.data.synth import generate_dataset
from amoseg.errors import AmosegError
from amoseg.inference.bundle import read_bundles
from amoseg.inference.package import PACKAGE_FORMAT_VERSION, read_package
from amoseg.inference.segmenter import Segmenter, SegmentOptions
from amoseg.store.prepare import prepare_dataset
from amoseg.store.slice_store import SliceStore
from amoseg.training import TrainSettings, train

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]

#: configuration → (recipe, prepare options, tiny parameters)
CONFIGS = {
    "seed": ("unet", {"size": 32}, {"base": 4, "depth": 2, "augment": False}),
    "2d": ("unet", {"configuration": "2d"}, {"base": 4, "depth": 2, "augment": False}),
    "3d": ("unet3d", {"configuration": "3d"},
           {"base": 4, "stages": 3, "patch_size": [16, 16, 8], "augment": False}),
}  # fmt: skip


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle") / "amos"
    generate_dataset(root, 4, 0, "demo", progress=False)
    return root


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def trained(request, phantoms, tmp_path_factory):
    """A one-epoch run of each configuration, its package and its ONNX export."""
    recipe, prepare, hparams = CONFIGS[request.param]
    root = tmp_path_factory.mktemp(f"bundle-{request.param}")
    store = root / "store"
    prepare_dataset(phantoms, store, split=(0.5, 0.25, 0.25), progress=False, **prepare)
    settings = TrainSettings(
        epochs=1, device="cpu", progress=False, max_slices_per_epoch=4, num_workers=0,
        batch_size=2, hparams=hparams,
    )  # fmt: skip
    run = root / "run"
    train(recipe, store, run, settings)
    package, onnx = root / "m.amoseg.zip", root / "m.onnx"
    main(["export", str(run), "--package", str(package), "--licence", "CC-BY-4.0"])
    main(["export", str(run), "--onnx", str(onnx), "--no-check"])
    case = SliceStore(store).cases("test")[0]
    scan = nib.load(SliceStore(store).meta(case)["image_file"])
    return request.param, store, run, package, onnx, scan


def labels(models, scan, **options) -> np.ndarray:
    segmenter = Segmenter.open(models, SegmentOptions(device="cpu", **options))
    return segmenter.labels(np.asarray(scan.dataobj), scan.affine)


def test_run_package_and_onnx_give_the_same_labels(trained):
    name, _store, run, package, onnx, scan = trained
    from_run = labels(run, scan)
    assert from_run.shape == scan.shape and from_run.dtype == np.uint8
    np.testing.assert_array_equal(labels(package, scan), from_run)
    # ONNX Runtime computes in float32; torch may run bf16 where the CPU has it natively
    from_onnx = labels(run, scan, backend="onnx", onnx_path=onnx)
    assert (from_onnx == labels(run, scan, precision="fp32")).mean() >= 0.999, name
    [bundle] = read_bundles(package)
    assert bundle.configuration_name == name
    assert (bundle.preprocessor() is None) == (name == "seed")


def test_evaluate_of_the_package_equals_evaluate_of_the_run(trained, tmp_path):
    _name, store, run, package, _onnx, _scan = trained
    args = ["--data", str(store), "--split", "test", "--device", "cpu"]
    main(["evaluate", str(run), *args])
    main(["evaluate", str(package), *args, "-o", str(tmp_path / "pkg")])
    of_run = read_json(run / "eval_test" / "metrics.json")["native"]
    of_package = read_json(tmp_path / "pkg" / "metrics.json")["native"]
    assert of_run["n_cases"] == of_package["n_cases"] >= 1
    assert of_package["mean_dice"] == pytest.approx(of_run["mean_dice"], abs=1e-9)
    assert of_package["per_organ"] == of_run["per_organ"]


def test_the_package_is_format_2_with_a_card_that_scores_natively(trained):
    name, _store, run, package, _onnx, _scan = trained
    pkg = read_package(package)
    assert pkg.manifest["format_version"] == PACKAGE_FORMAT_VERSION == 2
    card = pkg.card
    assert card["licence"] == "CC-BY-4.0" and card["configurations"] == [name]
    assert card["training_data"]["configuration"] == name
    assert card["training_data"]["synthetic"] is True
    assert "path" not in json.dumps(card["training_settings"])
    native = card["metrics"][0].get("test_native")
    if (run / "eval_test" / "metrics.json").exists():  # the evaluate test ran first
        assert native is None or "per_organ" in native
    with zipfile.ZipFile(package) as zf:
        assert "store/" not in zf.read("members/0/config.json").decode()


def with_format_version(package, target, version: int):
    """A copy of `package` whose manifest claims another format version."""
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "amoseg-package.json":
                data = json.dumps({**json.loads(data), "format_version": version}).encode()
            dst.writestr(info, data)
    return target


def test_a_version_1_package_still_predicts(tmp_path, tiny_unet_run):
    """Format 1 (no postprocessing entries) is read as it always was."""
    package = tmp_path / "v1.amoseg.zip"
    main(["export", str(tiny_unet_run), "--package", str(package)])
    old = with_format_version(package, tmp_path / "old.amoseg.zip", 1)
    assert [b.recipe for b in read_bundles(old)] == ["unet"]
    future = with_format_version(package, tmp_path / "future.amoseg.zip", 4)  # 3: nnU-Net
    with pytest.raises(AmosegError, match="newer than this amoseg reads"):
        read_bundles(future)
