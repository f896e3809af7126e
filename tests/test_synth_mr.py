"""MR phantoms, mixed datasets, --hard, --randomise-intensity and --workers of the generator:
on-disk format, MR contrast from relaxation times, anatomy in world coordinates, determinism."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.atomic import read_json
from amoseg.data.synth import MIXED_MR_FRACTION, case_plan, generate_dataset, synth_case
from amoseg.data.synth_anatomy import T, sample_patient
from amoseg.data.synth_mr import SEQUENCES, sample_protocol
from amoseg.errors import AmosegError
from amoseg.labels import NUM_CLASSES

N_MR = 4


@pytest.fixture(scope="module")
def mr_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_mr") / "amos"
    return generate_dataset(out, N_MR, 0, preset="demo", progress=False, modality="mr")


def _entries(root: Path) -> list[dict]:
    meta = read_json(root / "dataset.json")
    return [e for split in ("training", "validation", "test") for e in meta[split]]


def test_mr_layout_ids_dtypes_and_flags(mr_dataset):
    meta = read_json(mr_dataset / "dataset.json")
    assert meta["amoseg_synthetic"] is True
    assert meta["modality"] == {"0": "MRI"}
    entries = _entries(mr_dataset)
    assert len(entries) == N_MR
    for entry in entries:
        m = re.fullmatch(r"\./images(Tr|Va|Ts)/amos_(\d{4})\.nii\.gz", entry["image"])
        assert m and int(m.group(2)) >= 500  # AMOS: ids >= 500 are MRI
        assert entry["modality"] == "MRI"
        info = meta["amoseg_synth"]["cases"][f"amos_{m.group(2)}"]
        assert info["modality"] == "mr" and info["sequence"] in SEQUENCES
        image = nib.load(mr_dataset / entry["image"])
        label = nib.load(mr_dataset / entry["label"])
        data = np.asarray(image.dataobj)
        assert image.get_data_dtype() == np.int16 and data.min() >= 0  # MR: non-negative
        assert data.max() > 100  # a real dynamic range, not a blank image
        assert image.shape == label.shape and np.allclose(image.affine, label.affine)
        sx, sy, sz = image.header.get_zooms()
        # MR: smaller matrix than the CT demo (128-160²), thicker slices, rectangular FOV
        assert image.shape[0] <= 120 and image.shape[1] <= 120 and image.shape[2] <= 36
        assert sx == pytest.approx(sy) and sz >= 3.0
        assert 280 <= sx * image.shape[0] <= 560
        labels = np.asarray(label.dataobj)
        assert labels.max() <= 15 and {1, 2, 3, 6, 8}.issubset(set(np.unique(labels).tolist()))


def test_mr_contrast_follows_relaxation_times():
    """Relative signals, per sequence, as radiologists read them: T1 liver > spleen and fluid
    dark; T2 (HASTE) fluid brightest, spleen > liver > muscle, flowing blood dark."""
    for index in range(40):
        rng = np.random.default_rng(index)
        p = sample_patient(rng)
        proto = sample_protocol(p, rng)
        s = proto.water + proto.fat
        if proto.sequence in ("t1_in", "t1_opp"):
            assert s[T["liver"]] > s[T["spleen"]] and s[T["bile"]] < s[T["liver"]]
            assert s[T["subq_fat"]] > s[T["muscle"]]
        elif proto.sequence == "t2_haste":
            assert s[T["bile"]] > s[T["spleen"]] > s[T["liver"]] > s[T["muscle"]]
            assert s[T["urine"]] > s[T["liver"]] and s[T["artery"]] < s[T["spleen"]]
        else:  # fat-suppressed portal venous: fat dark, enhancing vessels bright
            assert s[T["subq_fat"]] < s[T["liver"]] < s[T["portal"]]
        assert s[T["air"]] == 0 and s[T["bone_cort"]] < s[T["muscle"]]


def test_opposed_phase_darkens_fat_water_boundaries():
    """Opposed phase subtracts fat from water after partial-volume blurring: at a fat/liver
    interface the boundary is darker than either side (the India-ink artefact); in phase
    it is not."""
    import dataclasses

    from amoseg.data.synth_mr import mr_signal

    rng = np.random.default_rng(0)
    proto = sample_protocol(sample_patient(rng), rng)
    proto = dataclasses.replace(proto, noise_sigma=0.0, bias_sd=0.0)
    proto.water[T["liver"]] = 1.0  # fat-free liver, with subcutaneous fat as bright as it
    proto.fat[T["liver"]] = 0.0
    proto.water[T["subq_fat"]], proto.fat[T["subq_fat"]] = 0.05, 0.95
    proto.texture[:] = 0
    tissue = np.full((40, 8, 8), T["liver"], np.uint8)
    tissue[20:] = T["subq_fat"]
    profiles = {}
    for sequence in ("t1_in", "t1_opp"):
        image = mr_signal(
            dataclasses.replace(proto, sequence=sequence), tissue, rng, (0.7, 0.7, 3.0),
            np.zeros(tissue.shape, np.float32),
        )  # fmt: skip
        profiles[sequence] = image[:, 4, 4].astype(float)
    opp, inp = profiles["t1_opp"], profiles["t1_in"]
    assert opp[18:22].min() < 0.6 * min(opp[5], opp[35])  # dark line at the interface
    assert inp[18:22].min() > 0.8 * min(inp[5], inp[35])  # none in phase


def test_mr_organ_placement_in_world_coordinates(mr_dataset):
    for entry in _entries(mr_dataset):
        label = nib.load(mr_dataset / entry["label"])
        data = np.asarray(label.dataobj)
        c = {}
        for k in (1, 2, 3, 6, 8, 9):
            idx = np.argwhere(data == k)
            if len(idx):
                c[k] = nib.affines.apply_affine(label.affine, idx.mean(axis=0))
        mid = (c[8][0] + c[9][0]) / 2
        assert c[6][0] > mid + 30 and c[1][0] < mid - 30  # liver right, spleen left
        assert c[2][0] > mid > c[3][0]


def test_mr_same_seed_same_bytes_and_workers_agree(tmp_path):
    a, b = synth_case(7, 1, "demo", "mr"), synth_case(7, 1, "demo", "mr")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    one = generate_dataset(tmp_path / "one", 3, 9, progress=False, modality="mixed")
    two = generate_dataset(tmp_path / "two", 3, 9, progress=False, modality="mixed", workers=2)
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    for rel in files:
        da, db = (one / rel).read_bytes(), (two / rel).read_bytes()
        if rel.suffix == ".gz":  # the gzip header names the temp file; the payload must match
            da, db = gzip.decompress(da), gzip.decompress(db)
        assert da == db, rel


def test_mixed_follows_amos_ratio_and_stratifies():
    plan = case_plan(24, 0, "mixed")
    mr = [p for p in plan if p[1] == "mr"]
    assert len(mr) == round(24 * MIXED_MR_FRACTION) == 4
    assert all(i >= 500 for i, m, _ in plan if m == "mr") and all(
        0 < i < 500 for i, m, _ in plan if m == "ct"
    )
    assert {s for _, _, s in mr} == {"training", "validation", "test"}
    assert len({i for i, _, _ in plan}) == 24
    assert all(m == "ct" and 0 < i < 500 for i, m, _ in case_plan(24, 0, "ct"))
    assert all(m == "mr" and i >= 500 for i, m, _ in case_plan(5, 0, "mr"))


def test_same_anatomy_ct_and_mr():
    """A seed and index give one patient; MR only re-renders (and re-frames) it."""
    ct, mr = synth_case(3, 0, "demo", "ct"), synth_case(3, 0, "demo", "mr")
    assert ct.patient.sex == mr.patient.sex and ct.patient.scale == mr.patient.scale
    o_ct, o_mr = ct.patient.organs["liver"][0], mr.patient.organs["liver"][0]
    assert np.array_equal(o_ct.center, o_mr.center)


def test_plain_ct_unchanged_by_options():
    """Options draw from their own streams: --hard adds to a seed's patient, same anatomy."""
    plain = synth_case(5, 0, "demo")
    hard = synth_case(5, 0, "demo", hard=True)
    assert plain.patient.sex == hard.patient.sex
    assert np.array_equal(
        plain.patient.organs["spleen"][0].center, hard.patient.organs["spleen"][0].center
    )


def test_hard_ct_adds_lesions_inside_organs_and_metal():
    """Over a few hard cases: lesions are drawn, metal outshines bone, partial
    coverage drops organs."""
    coverages, lesions, metal = set(), 0, 0
    for index in range(10):
        case = synth_case(1, index, "demo", hard=True)
        extras = case.extras
        coverages.add(extras["coverage"])
        lesions += len(extras["lesions"])
        if extras["metal"]:
            metal += 1
            assert case.image.max() > 1500  # metal, even partial-volumed, outshines bone
        labels = set(np.unique(case.label).tolist())
        if extras["coverage"] == "upper":
            assert not {14, 15} & labels  # stops above the kidneys: no pelvis
        if extras["coverage"] == "lower":
            assert 5 not in labels  # starts below the liver: no esophagus
    assert lesions > 0 and {"full"} < coverages


def test_hard_lesion_is_labelled_as_its_organ():
    from amoseg.data.synth_anatomy import LIVER
    from amoseg.data.synth_hard import HardCT, Lesion, paint_hard
    from amoseg.data.synth_shapes import Canvas, Ellipsoid

    axes = [np.arange(-20.0, 21.0, 2.0)] * 3
    grid = [g.astype(np.float32) for g in np.meshgrid(*axes, indexing="ij")]
    cv = Canvas(axes, grid, np.zeros_like(grid[0]))
    inside = grid[0] ** 2 + grid[1] ** 2 + grid[2] ** 2 < 15**2
    cv.label[inside] = LIVER
    cv.tissue[inside] = T["liver"]
    lesion = Lesion(Ellipsoid(np.array([10.0, 0, 0]), np.full(3, 8.0), np.eye(3), 0), LIVER, "cyst")
    paint_hard(None, HardCT(lesions=[lesion]), cv)  # type: ignore[arg-type]
    cyst = cv.tissue == T["cyst"]
    assert cyst.any() and (cv.label[cyst] == LIVER).all()  # AMOS: a lesion is its organ
    assert not (cyst & ~inside).any()  # never painted outside the organ


def test_randomise_intensity_changes_contrast_not_labels():
    plain = synth_case(2, 0, "demo")
    rand = synth_case(2, 0, "demo", randomise=True)
    assert np.array_equal(plain.label, rand.label)
    medians = []
    for case in (plain, rand, synth_case(2, 1, "demo", randomise=True)):
        img = case.image.astype(float)
        medians.append([np.median(img[case.label == k]) for k in (1, 6)])
    # per scan, a tissue's intensity is drawn anew: liver-vs-spleen order is not fixed
    assert medians[1] != medians[0]
    mr = synth_case(2, 0, "demo", "mr", randomise=True)
    assert mr.image.min() >= 0


def test_bad_modality_and_limits(tmp_path):
    with pytest.raises(AmosegError, match="modality"):
        generate_dataset(tmp_path / "x", 1, 0, progress=False, modality="pet")
    with pytest.raises(AmosegError, match="at most"):
        generate_dataset(tmp_path / "x", 501, 0, progress=False, modality="mr")
    with pytest.raises(AmosegError, match="workers"):
        generate_dataset(tmp_path / "x", 1, 0, progress=False, workers=0)
    assert not (tmp_path / "x").exists()


def test_mr_organ_shares_match_real_amos(mr_dataset, realdata):
    """Upper-abdominal organs' pooled voxel counts, relative to the liver's, lie within 3× of
    a real AMOS scan's (relative, because MR frames the body more tightly than CT; it mostly
    stops above the pelvis, so bladder and uterus are rarer and not compared)."""
    ref = np.asarray(nib.load(realdata / "amos_0013_full_label.nii.gz").dataobj)
    ref_share = np.bincount(ref.ravel(), minlength=NUM_CLASSES) / ref.size
    counts = np.zeros(NUM_CLASSES, np.int64)
    for entry in _entries(mr_dataset):
        data = np.asarray(nib.load(mr_dataset / entry["label"]).dataobj)
        counts += np.bincount(data.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    share = counts / counts.sum()
    assert 0.85 < share[0] < 0.99
    for k in range(1, 14):
        ratio = (share[k] / share[6]) / (ref_share[k] / ref_share[6])
        assert 1 / 3 <= ratio <= 3, (k, share[k], ref_share[k])
