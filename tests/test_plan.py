"""`amoseg plan`: the fingerprint's spacings and intensities, the planner's rules, and plan.json
validation (an invalid edit gets one line naming the field)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.cli.main import main
from amoseg.data.synth import _FULL_DZ
from amoseg.errors import AmosegError
from amoseg.planning import load_plan, make_plan
from amoseg.planning.plan import Plan
from amoseg.planning.planner import ANISOTROPY, sample_bytes
from tests.test_amos import write_listing

#: in-plane spacing (the full preset's 0.6–0.9 mm) and z (its slice thicknesses) per case
SPACINGS = [(0.62, 1.25), (0.70, 5.0), (0.78, 2.0), (0.86, 5.0)]


def write_case(root: Path, case_id: str, spacing: tuple[float, float], las: bool) -> dict:
    """A small CT in air with two organs, at the given spacing (RAS or LAS on disk)."""
    rng = np.random.default_rng(len(case_id) + int(case_id[-1]))
    shape = (40, 36, 10)
    image = np.full(shape, -1000, np.int16)
    image[6:34, 5:31] = rng.integers(-80, 80, size=(28, 26, 10))
    label = np.zeros(shape, np.uint8)
    label[10:18, 8:16, 2:7] = 6
    image[10:18, 8:16, 2:7] = 60
    label[22:28, 20:26, 4:9] = 1
    image[22:28, 20:26, 4:9] = 45
    affine = np.diag([spacing[0], spacing[0], spacing[1], 1.0])
    if las:
        affine[0, 0] *= -1
        image, label = image[::-1].copy(), label[::-1].copy()
    for kind, data in (("images", image), ("labels", label)):
        path = root / f"{kind}Tr" / f"{case_id}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), str(path))
    return {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}


@pytest.fixture(scope="module")
def full_like_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plan") / "amos"
    entries = [
        write_case(root, f"amos_{i + 1:04d}", s, las=i % 2 == 1) for i, s in enumerate(SPACINGS)
    ]
    write_listing(root, {"training": entries, "validation": []})
    return root


def test_full_preset_spacings_are_what_the_generator_draws():
    assert {z for _, z in SPACINGS} <= set(_FULL_DZ)
    assert all(0.6 <= xy <= 0.9 for xy, _ in SPACINGS)


def test_plan_picks_the_median_spacing(full_like_root):
    plan = make_plan(full_like_root, size=64, progress=False)
    xy = float(np.median([s for s, _ in SPACINGS]))
    z = [s for _, s in SPACINGS]
    np.testing.assert_allclose(plan.median_spacing, (xy, xy, np.median(z)))
    two_d = plan.configuration("2d")
    np.testing.assert_allclose(two_d.spacing[:2], (xy, xy))
    assert two_d.resample_z is False and two_d.dims == 2
    # z median 3.5 mm > 3 × 0.74 mm: the 3d z target is the 10th percentile of the z spacings
    assert np.median(z) > ANISOTROPY * xy
    three_d = plan.configuration("3d")
    np.testing.assert_allclose(three_d.spacing, (xy, xy, np.percentile(z, 10)))
    assert three_d.dims == 3 and len(three_d.patch_size) == 3
    assert three_d.network.name == "unet3d" and two_d.network.name == "unet"
    seed = plan.configuration("seed")
    assert seed.size == 64 and seed.spacing is None and seed.keep == "organ"


def test_isotropic_3d_target_is_the_median(tmp_path):
    root = tmp_path / "amos"
    spacings = [(0.7, 1.0), (0.8, 1.25), (0.9, 1.5)]
    entries = [write_case(root, f"amos_{i + 1:04d}", s, las=False) for i, s in enumerate(spacings)]
    write_listing(root, {"training": entries, "validation": []})
    plan = make_plan(root, size=32, progress=False)
    np.testing.assert_allclose(plan.configuration("3d").spacing, (0.8, 0.8, 1.25))


def test_ct_foreground_statistics(full_like_root):
    plan = make_plan(full_like_root, size=32, progress=False)
    fg = plan.fingerprint["ct_foreground"]
    values = np.array([60] * 320 + [45] * 180, dtype=float)  # per case: liver, spleen voxels
    assert fg["samples"] == 4 * values.size
    assert fg["mean"] == pytest.approx(values.mean())
    assert fg["p00_5"] == 45 and fg["p99_5"] == 60
    norm = plan.configuration("2d").normalisation["ct"]
    assert norm.scheme == "ct" and norm.clip == (45.0, 60.0)
    body = plan.fingerprint["cases"][0]["body_box"]
    assert body[0][1] - body[0][0] < 40 and body[2] == [0, 10]  # air cropped in-plane only


def test_plan_cli_writes_the_contract(full_like_root, tmp_path):
    out = tmp_path / "plan.json"
    with pytest.raises(SystemExit) as info:
        main(["plan", str(full_like_root), "-o", str(out), "--quiet"])
        raise SystemExit(0)
    assert (info.value.code or 0) == 0
    data = json.loads(out.read_text())
    spacing = data["configurations"]["2d"]["spacing"]
    assert len(spacing) == 3 and all(isinstance(v, float) and v > 0 for v in spacing)
    assert {"seed", "2d", "3d"} <= set(data["configurations"])
    assert load_plan(out).configuration("2d").spacing == tuple(spacing)


def test_plan_on_real_amos_mini(realdata, tmp_path):
    root = realdata / "amos_mini"
    plan = make_plan(root, size=64, progress=False)
    spacings = []
    for path in sorted((root).glob("images*/*.nii.gz")):
        affine = nib.load(str(path)).affine
        spacings.append(np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    np.testing.assert_allclose(plan.median_spacing, np.median(spacings, axis=0), rtol=1e-6)
    assert {c["case_id"] for c in plan.fingerprint["cases"]} == {"amos_0001", "amos_0013"}
    fg = plan.fingerprint["ct_foreground"]
    assert fg["p00_5"] < fg["mean"] < fg["p99_5"]


BAD_EDITS = {
    "configurations.2d.spacing": lambda d: d["configurations"]["2d"].update(spacing=[0.7, -1, 5]),
    "configurations.3d.batch_size": lambda d: d["configurations"]["3d"].update(batch_size="2"),
    "configurations.2d.patch_size": lambda d: d["configurations"]["2d"].update(patch_size=[64]),
    "configurations.2d.normalisation.ct": lambda d: d["configurations"]["2d"]["normalisation"][
        "ct"
    ].update(std=0),
    "configurations.seed.size": lambda d: d["configurations"]["seed"].update(size=0),
    "configurations.3d.network.class": lambda d: d["configurations"]["3d"]["network"].pop("class"),
    "configurations.2d.body_crop.threshold": lambda d: d["configurations"]["2d"].update(
        body_crop={"threshold": "air"}
    ),
}


@pytest.mark.parametrize("field", sorted(BAD_EDITS))
def test_invalid_edit_names_the_field(full_like_root, tmp_path, field):
    good = make_plan(full_like_root, size=32, progress=False).to_dict()
    BAD_EDITS[field](good)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(good))
    with pytest.raises(AmosegError) as info:
        load_plan(path)
    line = info.value.line()
    assert field in line and "\n" not in line and str(path) in line


def test_plan_round_trips(full_like_root):
    plan = make_plan(full_like_root, size=32, progress=False)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.to_dict() == plan.to_dict()


def test_memory_estimate_grows_with_the_patch():
    assert sample_bytes((128, 128, 128), 32, 4) > sample_bytes((64, 64, 64), 32, 4) * 7
