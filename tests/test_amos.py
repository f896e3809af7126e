"""Reading an AMOS22 root: dataset.json lists, folder scan, and header pre-flight checks.

Also home of the tiny-AMOS-folder builders that tests/test_prepare.py reuses.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.data.amos import check_case_files
from amoseg.data.datasets import find_cases
from amoseg.errors import AmosegError

SHAPE = (16, 14, 8)  # X, Y, Z: tiny, and X != Y so a transposed slice would show
SPACING = (0.8, 0.8, 2.5)
ORGAN_SLICES = (2, 3, 4, 5)  # canonical z indices that hold organs


def anatomy(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A canonical (RAS) image and label: liver on the patient's right (high x), spleen on
    the left (low x), organs only in slices 2..5."""
    rng = np.random.default_rng(seed)
    image = rng.normal(-100, 200, SHAPE).round().astype(np.int16)
    label = np.zeros(SHAPE, dtype=np.uint8)
    z0, z1 = ORGAN_SLICES[0], ORGAN_SLICES[-1] + 1
    label[10:15, 3:10, z0:z1] = 6  # liver, patient right
    label[1:4, 8:12, z0 : z1 - 1] = 1  # spleen, patient left, posterior-ish
    image[label == 6] = 60
    image[label == 1] = 45
    return image, label


def ras_affine(origin: tuple[float, float, float] = (-6.0, -5.0, 100.0)) -> np.ndarray:
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = origin
    return affine


def as_las(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy stored left-to-right (how AMOS ships most scans)."""
    flip = np.eye(4)
    flip[0, 0] = -1
    flip[0, 3] = data.shape[0] - 1
    return np.ascontiguousarray(data[::-1]), affine @ flip


def save(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def make_case(
    root: Path,
    case_id: str,
    *,
    folder: str = "Tr",
    orientation: str = "RAS",
    seed: int = 0,
    label_dtype: type = np.uint8,
) -> dict[str, str]:
    """Write imagesXX/<id>.nii.gz and labelsXX/<id>.nii.gz; return the dataset.json entry."""
    image, label = anatomy(seed)
    affine = ras_affine()
    if orientation == "LAS":
        image, affine_las = as_las(image, affine)
        label, _ = as_las(label, affine)
        affine = affine_las
    save(root / f"images{folder}" / f"{case_id}.nii.gz", image, affine)
    save(root / f"labels{folder}" / f"{case_id}.nii.gz", label.astype(label_dtype), affine)
    return {
        "image": f"./images{folder}/{case_id}.nii.gz",
        "label": f"./labels{folder}/{case_id}.nii.gz",
    }


def make_root(root: Path, case_ids: list[str], *, listing: bool = True, **kwargs) -> Path:
    """A tiny AMOS22 folder; cases alternate between the training and validation lists."""
    entries: dict[str, list] = {"training": [], "validation": []}
    for n, case_id in enumerate(case_ids):
        key, folder = ("training", "Tr") if n % 2 == 0 else ("validation", "Va")
        entries[key].append(make_case(root, case_id, folder=folder, seed=n, **kwargs))
    if listing:
        write_listing(root, entries)
    return root


def write_listing(root: Path, entries: dict[str, list]) -> None:
    spec = {
        "name": "AMOS",
        "labels": {"0": "background", "6": "liver"},
        "numTraining": len(entries["training"]),
        "training": entries["training"],
        "validation": entries["validation"],
        "test": entries.get("test", []),
    }
    (root / "dataset.json").write_text(json.dumps(spec))


def test_dataset_json_lists_training_and_validation(tmp_path):
    make_root(tmp_path, ["amos_0003", "amos_0001", "amos_0507"])
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["amos_0001", "amos_0003", "amos_0507"]
    assert [c.modality for c in cases] == ["ct", "ct", "mr"]
    by_id = {c.case_id: c for c in cases}
    assert by_id["amos_0001"].image == tmp_path / "imagesVa" / "amos_0001.nii.gz"
    assert by_id["amos_0003"].label == tmp_path / "labelsTr" / "amos_0003.nii.gz"


def test_dataset_json_ignores_unlisted_files(tmp_path):
    make_root(tmp_path, ["amos_0001", "amos_0002"])
    make_case(tmp_path, "amos_0009")  # on disk, not in dataset.json: not used
    assert [c.case_id for c in find_cases(tmp_path)] == ["amos_0001", "amos_0002"]


def test_folder_scan_without_dataset_json_pairs_by_name(tmp_path):
    make_root(tmp_path, ["amos_0001", "amos_0002", "amos_0600"], listing=False)
    save(tmp_path / "imagesTr" / "amos_0077.nii.gz", *anatomy()[:1], ras_affine())  # no label
    make_case(tmp_path, "amos_0100", folder="Ts")  # a labelled test scan is a labelled case
    save(tmp_path / "imagesTs" / "amos_0101.nii.gz", *anatomy()[:1], ras_affine())  # AMOS-like
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["amos_0001", "amos_0002", "amos_0100", "amos_0600"]
    assert cases[3].modality == "mr"


def test_test_list_used_only_where_it_names_labels(tmp_path):
    entries = {"training": [make_case(tmp_path, "amos_0001")], "validation": []}
    entries["test"] = [
        {"image": "./imagesTs/amos_0002.nii.gz"},  # AMOS: test labels are not public
        "./imagesTs/amos_0003.nii.gz",
        make_case(tmp_path, "amos_0004", folder="Ts"),  # e.g. a synthetic set with labels
    ]
    write_listing(tmp_path, entries)
    assert [c.case_id for c in find_cases(tmp_path)] == ["amos_0001", "amos_0004"]


def test_real_amos_mini_listing(realdata):
    cases = find_cases(realdata / "amos_mini")
    assert [c.case_id for c in cases] == ["amos_0001", "amos_0013"]
    assert all(c.image.exists() and c.label.exists() and c.modality == "ct" for c in cases)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: None, "dataset folder not found"),
        (lambda r: r.mkdir(), "no labelled cases found"),
        (lambda r: r.write_text("x"), "not a folder"),
        (
            lambda r: (r.mkdir(), (r / "dataset.json").write_text("{not json")),
            "dataset.json is not valid JSON",
        ),
        (
            lambda r: (r.mkdir(), (r / "dataset.json").write_text('{"name": "x"}')),
            "no 'training' or 'validation' list",
        ),
        (
            lambda r: (r.mkdir(), write_listing(r, {"training": [{"image": 3}], "validation": []})),
            "lacks an 'image' or 'label' path",
        ),
    ],
)
def test_bad_roots_raise_one_clear_error(tmp_path, setup, message):
    root = tmp_path / "amos"
    setup(root)
    with pytest.raises(AmosegError, match=message) as info:
        find_cases(root)
    assert "\n" not in info.value.line()


def test_duplicate_case_is_refused(tmp_path):
    entry = make_case(tmp_path, "amos_0001")
    write_listing(tmp_path, {"training": [entry], "validation": [entry]})
    with pytest.raises(AmosegError, match="listed twice"):
        find_cases(tmp_path)


def test_preflight_names_missing_listed_file(tmp_path):
    make_root(tmp_path, ["amos_0001"])
    (tmp_path / "labelsTr" / "amos_0001.nii.gz").unlink()
    (case,) = find_cases(tmp_path)
    with pytest.raises(AmosegError, match="label file listed for amos_0001 is missing") as info:
        check_case_files(case)
    assert info.value.path == tmp_path / "labelsTr" / "amos_0001.nii.gz"


def test_preflight_catches_grid_mismatch_from_headers(tmp_path):
    make_root(tmp_path, ["amos_0001", "amos_0002"])
    _, label = anatomy()
    save(tmp_path / "labelsTr" / "amos_0001.nii.gz", label[:, :, :5], ras_affine())
    moved = ras_affine(origin=(-6.0, -5.0, 102.5))  # one slice off: organs would misalign
    save(tmp_path / "labelsVa" / "amos_0002.nii.gz", label, moved)
    cases = find_cases(tmp_path)
    with pytest.raises(AmosegError, match=r"shape \(16, 14, 8\) and label shape \(16, 14, 5\)"):
        check_case_files(cases[0])
    with pytest.raises(AmosegError, match="affines differ"):
        check_case_files(cases[1])


def test_preflight_accepts_tiny_float_noise_in_affine(tmp_path):
    make_root(tmp_path, ["amos_0001"])
    _, label = anatomy()
    save(tmp_path / "labelsTr" / "amos_0001.nii.gz", label, ras_affine() + 1e-5)
    check_case_files(find_cases(tmp_path)[0])


def test_preflight_reports_non_nifti_bytes(tmp_path):
    make_root(tmp_path, ["amos_0001"])
    (tmp_path / "imagesTr" / "amos_0001.nii.gz").write_text("this is not an image\n")
    with pytest.raises(AmosegError) as info:
        check_case_files(find_cases(tmp_path)[0])
    assert info.value.path == tmp_path / "imagesTr" / "amos_0001.nii.gz"
    assert "image file" in info.value.what
