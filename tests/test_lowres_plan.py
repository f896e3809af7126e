"""`3d_lowres` and `3d_cascade_fullres` planned by nnU-Net v2's rule (docs/plan.md): the
expected low-resolution spacings are worked out by hand here, not by the planner's loop."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.cli.main import main
from amoseg.planning import load_plan
from amoseg.planning.fingerprint import CaseFingerprint, Fingerprint
from amoseg.planning.planner import plan_dataset
from tests.test_amos import write_listing

#: enough memory that the 3d patch is the 192-voxel cap (2 samples of 192³ ≈ 54 GiB estimated)
BIG_GB = 64.0


def fingerprint(spacing: tuple[float, float, float], shape: tuple[int, int, int]) -> Fingerprint:
    case = CaseFingerprint(
        case_id="amos_0001",
        modality="ct",
        spacing=spacing,
        shape=shape,
        body_box=tuple((0, n) for n in shape),  # type: ignore[arg-type]
        foreground_voxels=1,
    )
    return Fingerprint(cases=(case, case, case), ct_foreground=None)


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
        raise SystemExit(0)
    return info.value.code or 0


def test_isotropic_lowres_spacing_by_hand():
    # 400³ voxels at 1 mm, patch 192³: 192³/400³ = 11 % < 25 %. Every axis is within 2× of the
    # coarsest, so all grow by 1.03 per step until 192³ / (400/f)³ >= 0.25, i.e. 400/f <= 192 /
    # 0.25^(1/3) = 304.8 mm: f = 1.03^k with k = ceil(ln(400/304.8) / ln 1.03) = 10.
    plan = plan_dataset(fingerprint((1.0, 1.0, 1.0), (400, 400, 400)), memory_gb=BIG_GB)
    assert plan.configuration("3d").patch_size == (192, 192, 192)
    k = math.ceil(math.log(400 / (192 / 0.25 ** (1 / 3))) / math.log(1.03))
    assert k == 10
    np.testing.assert_allclose(plan.configuration("3d_lowres").spacing, [1.03**k] * 3, rtol=1e-9)
    # the patch is planned again for the 400/1.03^10 ≈ 298-voxel median shape: still the cap
    assert plan.configuration("3d_lowres").patch_size == (192, 192, 192)
    cascade = plan.configuration("3d_cascade_fullres")
    assert cascade.previous_stage == "3d_lowres"
    assert cascade.spacing == plan.configuration("3d").spacing
    assert cascade.patch_size == plan.configuration("3d").patch_size


def test_anisotropic_axes_grow_first_by_hand():
    # 640×640×80 voxels at 0.8×0.8×4 mm: z (5× coarser) is never touched while x, y are more
    # than 2× finer than it (until 0.8·1.03^k >= 2 mm, k = 31). Patch 192×192×80 covers
    # (192/640)² = 9 %; 25 % needs 640/1.03^k <= 384 voxels in-plane: k = ceil(ln(5/3)/ln 1.03)
    # = 18 < 31, so only x and y grow.
    plan = plan_dataset(fingerprint((0.8, 0.8, 4.0), (640, 640, 80)), memory_gb=BIG_GB)
    assert plan.configuration("3d").spacing == (0.8, 0.8, 4.0)
    assert plan.configuration("3d").patch_size == (192, 192, 80)
    k = math.ceil(math.log(640 / 384) / math.log(1.03))
    assert k == 18
    expected = [0.8 * 1.03**k, 0.8 * 1.03**k, 4.0]
    np.testing.assert_allclose(plan.configuration("3d_lowres").spacing, expected, rtol=1e-9)


def test_no_lowres_when_the_patch_covers_a_quarter_or_the_gain_is_under_2x():
    # 192³ patch of a 240³ image covers 51 %: no low-resolution stage
    plan = plan_dataset(fingerprint((1.0, 1.0, 1.0), (240, 240, 240)), memory_gb=BIG_GB)
    assert {"3d_lowres", "3d_cascade_fullres"}.isdisjoint(plan.configurations)
    # 400×400×160 at 1 mm: (192/400)² = 23 % < 25 % but two steps (400/1.03² <= 384) suffice,
    # and 1.03⁴ = 1.13 < 2× fewer voxels: nnU-Net drops the stage
    plan = plan_dataset(fingerprint((1.0, 1.0, 1.0), (400, 400, 160)), memory_gb=BIG_GB)
    assert "3d_lowres" not in plan.configurations


def write_ct(root: Path, case_id: str) -> dict:
    shape = (96, 96, 48)
    image = np.full(shape, -1000, np.int16)
    image[4:92, 4:92] = 40
    label = np.zeros(shape, np.uint8)
    label[20:60, 20:60, 10:30] = 6
    image[20:60, 20:60, 10:30] = np.random.default_rng(0).integers(40, 80, (40, 40, 20))
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for kind, data in (("images", image), ("labels", label)):
        path = root / f"{kind}Tr" / f"{case_id}.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, affine), str(path))
    return {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}


def test_cli_plans_prints_and_prepares_an_edited_lowres(tmp_path, capsys):
    root = tmp_path / "amos"
    entries = [write_ct(root, f"amos_{i + 1:04d}") for i in range(3)]
    write_listing(root, {"training": entries, "validation": []})
    plan_file = tmp_path / "plan.json"
    # a tiny memory budget shrinks the 3d patch to 16³: far under 25 % of the body box
    assert run_cli(["plan", str(root), "-o", str(plan_file), "--memory-gb", "1e-4", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "3d_lowres:" in out and "after 3d_lowres" in out
    data = json.loads(plan_file.read_text())
    assert {"seed", "2d", "3d", "3d_lowres", "3d_cascade_fullres"} <= set(data["configurations"])
    assert data["configurations"]["3d_cascade_fullres"]["previous_stage"] == "3d_lowres"
    # the low-resolution spacing is the user's to choose (TotalSegmentator's 6 mm model)
    data["configurations"]["3d_lowres"]["spacing"] = [6.0, 6.0, 6.0]
    plan_file.write_text(json.dumps(data))
    assert load_plan(plan_file).configuration("3d_lowres").spacing == (6.0, 6.0, 6.0)
    store = tmp_path / "store"
    args = ["prepare", str(root), str(store), "--plan", str(plan_file), "--quiet"]
    assert run_cli([*args, "--configuration", "3d_lowres", "--split", "0.34,0.33,0.33"]) == 0
    meta = json.loads((store / "cases" / "amos_0001" / "meta.json").read_text())
    assert meta["configuration"] == "3d_lowres"
    assert np.load(store / "cases" / "amos_0001" / "label.npy").shape[0] == 8  # 48 mm z at 6 mm
    # the cascade is planned but needs its previous stage (--previous): one line, exit 2
    capsys.readouterr()
    args[2] = str(tmp_path / "cascade")
    code = run_cli([*args, "--configuration", "3d_cascade_fullres"])
    err = capsys.readouterr().err
    assert code == 2 and "cascade stage" in err and len(err.strip().splitlines()) == 1


def test_previous_stage_must_exist(tmp_path):
    plan = plan_dataset(fingerprint((1.0, 1.0, 1.0), (400, 400, 400)), memory_gb=BIG_GB)
    data = plan.to_dict()
    del data["configurations"]["3d_lowres"]
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(data))
    with pytest.raises(Exception, match=r"configurations\.3d_cascade_fullres\.previous_stage"):
        load_plan(path)


def test_on_the_fly_lowres_without_a_planned_stage_is_one_line(tmp_path, capsys):
    root = tmp_path / "amos"
    write_listing(root, {"training": [write_ct(root, f"amos_{i:04d}") for i in (1, 2, 3)],
                         "validation": []})  # fmt: skip
    # 96×96×48 voxels: the 8 GiB 3d patch covers the whole body, so nnU-Net's rule plans none
    code = run_cli(["prepare", str(root), str(tmp_path / "s"), "--configuration", "3d_lowres",
                    "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and "3d_lowres" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s").exists()


def test_a_chosen_lowres_spacing_plans_its_own_patch():
    # 400³ voxels at 1 mm; a 6 mm stage: median shape 400/6 = 66.7 voxels per axis, rounded up
    # to the network's multiple (2^depth = 16): 80³ — not the rule's spacing, not 3d's patch
    fp = fingerprint((1.0, 1.0, 1.0), (400, 400, 400))
    plan = plan_dataset(fp, memory_gb=BIG_GB, lowres=(6.0, 6.0, 6.0))
    low = plan.configuration("3d_lowres")
    assert low.spacing == (6.0, 6.0, 6.0) and low.patch_size == (80, 80, 80)
    assert plan.configuration("3d_cascade_fullres").previous_stage == "3d_lowres"
    # a data set the rule plans no stage for gets the chosen one
    small = plan_dataset(fingerprint((1.0, 1.0, 1.0), (240, 240, 240)), lowres=(3.0, 3.0, 3.0))
    assert small.configuration("3d_lowres").patch_size == (80, 80, 80)  # 240/3 = 80


def test_cli_lowres_spacing_option(tmp_path, capsys):
    root = tmp_path / "amos"
    write_listing(root, {"training": [write_ct(root, f"amos_{i:04d}") for i in (1, 2, 3)],
                         "validation": []})  # fmt: skip
    plan_file = tmp_path / "plan.json"
    assert run_cli(["plan", str(root), "-o", str(plan_file), "--lowres-spacing", "6x6x4",
                    "--quiet"]) == 0  # fmt: skip
    assert load_plan(plan_file).configuration("3d_lowres").spacing == (6.0, 6.0, 4.0)
    capsys.readouterr()
    for bad in ("6x6", "six", "0", "0.5"):  # 0.5 mm is finer than the 1 mm 3d spacing
        target = tmp_path / f"p{bad}.json"
        code = run_cli(["plan", str(root), "-o", str(target), "--lowres-spacing", bad, "--quiet"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "lowres" in err.lower() and len(err.splitlines()) == 1, (bad, err)
        assert not target.exists()
