"""The synthetic AMOS generator: on-disk format, realism against a real AMOS label, anatomy
placement in world coordinates, determinism, and the `amoseg synth` command."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.atomic import read_json
from amoseg.cli.main import main
from amoseg.data.synth import SPLIT_FOLDERS, generate_dataset, split_counts, synth_case
from amoseg.errors import AmosegError
from amoseg.labels import AMOS_DATASET_LABELS, CLASS_NAMES, NUM_CLASSES

SEED = 0
N_CASES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return generate_dataset(
        tmp_path_factory.mktemp("synth") / "amos", N_CASES, SEED, preset="demo", progress=False
    )


@pytest.fixture(scope="module")
def cases(dataset) -> list[tuple[str, nib.Nifti1Image, nib.Nifti1Image]]:
    meta = read_json(dataset / "dataset.json")
    out = []
    for split in ("training", "validation", "test"):
        for entry in meta[split]:
            image = nib.load(dataset / entry["image"])
            label = nib.load(dataset / entry["label"])
            out.append((split, image, label))
    return out


def _centroids(label: nib.Nifti1Image) -> dict[int, np.ndarray]:
    """World-space (RAS mm) centroid of every label present."""
    data = np.asarray(label.dataobj)
    out = {}
    for k in range(1, NUM_CLASSES):
        idx = np.argwhere(data == k)
        if len(idx):
            out[k] = nib.affines.apply_affine(label.affine, idx.mean(axis=0))
    return out


def test_layout_and_dataset_json(dataset):
    meta = read_json(dataset / "dataset.json")
    for key in ("name", "description", "tensorImageSize", "modality", "labels"):
        assert key in meta
    assert meta["modality"] == {"0": "CT"}
    assert meta["amoseg_synthetic"] is True  # provenance: prepare and train carry it
    assert meta["labels"] == AMOS_DATASET_LABELS  # AMOS spellings: "arota", "gall bladder"
    assert meta["labels"]["8"] == "arota" and meta["labels"]["4"] == "gall bladder"
    n_tr, n_va, n_ts = split_counts(N_CASES)
    assert (meta["numTraining"], meta["numValidation"], meta["numTest"]) == (n_tr, n_va, n_ts)
    assert n_tr >= 1 and n_tr + n_va + n_ts == N_CASES
    ids = []
    for split, (img_dir, lab_dir) in SPLIT_FOLDERS.items():
        assert (dataset / img_dir).is_dir() and (dataset / lab_dir).is_dir()
        for entry in meta[split]:
            m = re.fullmatch(rf"\./{img_dir}/amos_(\d{{4}})\.nii\.gz", entry["image"])
            assert m, entry
            assert entry["label"] == f"./{lab_dir}/amos_{m.group(1)}.nii.gz"
            assert (dataset / entry["image"]).is_file() and (dataset / entry["label"]).is_file()
            ids.append(int(m.group(1)))
    assert len(set(ids)) == N_CASES and all(0 < i < 500 for i in ids)  # CT ids
    assert not list(dataset.rglob("*.tmp*"))


def test_dtypes_orientations_and_affines(cases):
    orientations, label_dtypes = set(), set()
    for _, image, label in cases:
        assert image.get_data_dtype() == np.int16
        assert label.get_data_dtype() in (np.uint8, np.uint16)
        label_dtypes.add(label.get_data_dtype().name)
        assert image.shape == label.shape and len(image.shape) == 3
        assert np.allclose(image.affine, label.affine)
        codes = nib.aff2axcodes(image.affine)
        orientations.add(codes)
        assert codes in {("L", "A", "S"), ("R", "A", "S")}
        header = image.header
        assert max(int(header["qform_code"]), int(header["sform_code"])) > 0
        sx, sy, sz = header.get_zooms()
        assert sx == pytest.approx(sy) and 1.25 <= sz <= 12
        assert 128 <= image.shape[0] <= 160 and 45 <= image.shape[2] <= 60  # demo matrix
        # a real abdomen fits: the field of view is 30–50 cm, as in AMOS
        assert 300 <= sx * image.shape[0] <= 500
        data = np.asarray(label.dataobj)
        assert data.min() >= 0 and data.max() <= 15
        hu = np.asarray(image.dataobj)
        assert hu.min() >= -2048 and hu.max() <= 3071
    assert orientations == {("L", "A", "S"), ("R", "A", "S")}
    assert label_dtypes == {"uint8", "uint16"}


def test_organ_shares_match_real_amos(cases, realdata):
    """Every organ's pooled voxel share lies within 3× of its share in a real AMOS scan."""
    ref = np.asarray(nib.load(realdata / "amos_0013_full_label.nii.gz").dataobj)
    ref_counts = np.bincount(ref.ravel(), minlength=NUM_CLASSES)
    # amos_0013 holds all 15 organs (uterus included), so every class has a real reference;
    # fail loudly if the file ever changes rather than silently skipping a class.
    assert (ref_counts[1:] > 0).all(), "reference lacks an organ: choose another reference"
    ref_share = ref_counts / ref.size
    counts = np.zeros(NUM_CLASSES, np.int64)
    total = 0
    for _, _, label in cases:
        data = np.asarray(label.dataobj)
        counts += np.bincount(data.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
        total += data.size
    share = counts / total
    assert 0.90 < share[0] < 0.99  # background ≈ 96 % as in AMOS
    for k in range(1, NUM_CLASSES):
        ratio = share[k] / ref_share[k]
        assert 1 / 3 <= ratio <= 3, f"{CLASS_NAMES[k]}: share {share[k]:.2e} vs {ref_share[k]:.2e}"


def test_every_organ_present(cases):
    seen = set()
    for _, _, label in cases:
        seen |= set(np.unique(np.asarray(label.dataobj)).tolist())
    assert seen == set(range(NUM_CLASSES))


def test_anatomical_placement_in_world_coordinates(cases, realdata):
    # RAS+ world: the real AMOS liver lies at larger x than its spleen, so +x = patient right.
    real = _centroids(nib.load(realdata / "amos_0013_full_label.nii.gz"))
    assert real[6][0] > real[1][0]
    for _, _, label in cases:
        c = _centroids(label)
        x = {k: v[0] for k, v in c.items()}
        y = {k: v[1] for k, v in c.items()}
        z = {k: v[2] for k, v in c.items()}
        mid = (x[8] + x[9]) / 2  # midline between aorta and IVC
        assert x[6] > mid + 30 and x[1] < mid - 30  # liver right, spleen left
        assert x[2] > mid > x[3]  # right / left kidney
        assert x[11] > mid > x[12]  # right / left adrenal
        assert x[9] > x[8]  # IVC right of the aorta
        assert x[7] < mid  # stomach left
        assert x[4] > mid  # gallbladder right, under the liver
        assert z[4] < z[6]
        assert y[1] < y[7]  # spleen posterior to stomach
        assert y[2] < y[8] and y[3] < y[8]  # kidneys paravertebral, behind the aorta
        if 14 in z:
            assert z[14] < min(z[2], z[3]) - 100  # bladder deep in the pelvis
        if 5 in z:
            assert z[5] > z[10] and z[5] > max(z[2], z[3])  # esophagus superior
        assert z[11] > z[2] and z[12] > z[3]  # adrenals above the kidneys


def test_same_seed_same_data_and_bytes(tmp_path):
    a, b = synth_case(11, 2), synth_case(11, 2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label)
    assert np.array_equal(a.affine, b.affine)
    c = synth_case(12, 2)
    assert c.image.shape != a.image.shape or not np.array_equal(a.image, c.image)
    first = generate_dataset(tmp_path / "a", 1, 5, progress=False)
    second = generate_dataset(tmp_path / "b", 1, 5, progress=False)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        da, db = (first / rel).read_bytes(), (second / rel).read_bytes()
        if rel.suffix == ".gz":  # the gzip header names the temp file; the payload must match
            da, db = gzip.decompress(da), gzip.decompress(db)
        assert da == db, rel


def test_intensities_overlap_but_differ(cases):
    """Organs have plausible, overlapping CT numbers: intensity alone cannot segment them."""
    _, image, label = cases[0]
    hu = np.asarray(image.dataobj).astype(float)
    lab = np.asarray(label.dataobj)
    med = {k: np.median(hu[lab == k]) for k in (1, 6, 10, 13)}
    assert all(-50 < v < 300 for v in med.values())
    liver = hu[lab == 6]
    spleen = hu[lab == 1]
    lo, hi = np.percentile(liver, [5, 95])
    assert ((spleen > lo) & (spleen < hi)).mean() > 0.05  # distributions overlap


def test_split_counts():
    assert split_counts(1) == (1, 0, 0)
    assert split_counts(2) == (2, 0, 0)
    assert split_counts(30) == (20, 5, 5)
    for n in range(1, 200):
        tr, va, ts = split_counts(n)
        assert tr >= 1 and tr + va + ts == n
        if n >= 20:
            assert abs(tr / n - 0.7) <= 0.05 and abs(va / n - 0.15) <= 0.03


def test_bad_arguments(tmp_path):
    with pytest.raises(AmosegError, match="at least 1"):
        generate_dataset(tmp_path / "x", 0, 0, progress=False)
    with pytest.raises(AmosegError, match="seed"):
        generate_dataset(tmp_path / "x", 1, -1, progress=False)
    with pytest.raises(AmosegError, match="at most"):
        generate_dataset(tmp_path / "x", 500, 0, progress=False)
    with pytest.raises(AmosegError, match="preset"):
        generate_dataset(tmp_path / "x", 1, 0, preset="huge", progress=False)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(AmosegError, match="not empty"):
        generate_dataset(busy, 1, 0, progress=False)
    with pytest.raises(AmosegError, match=r"no dataset\.json"):
        generate_dataset(busy, 1, 0, progress=False, overwrite=True)
    assert (busy / "notes.txt").read_text() == "mine"


def _run(argv: list[str]) -> int:
    """Exit code of the console entry point (it returns normally on success)."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_cli(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _run(["synth", str(out), "--cases", "1", "--seed", "3", "--preset", "demo"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("wrote 1 synthetic cases (1 CT; demo, seed 3)") and "\n" not in line
    assert (out / "dataset.json").exists()
    assert _run(["synth", str(out), "--cases", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: output folder exists and is not empty") and "Traceback" not in err
    assert _run(["synth", str(tmp_path / "other"), "--cases", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    assert _run(["synth", str(out), "--cases", "1", "--seed", "4", "--overwrite"]) == 0
    assert "seed 4" in read_json(out / "dataset.json")["description"]
