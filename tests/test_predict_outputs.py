"""`amoseg predict` never replaces an input or an existing output unless asked, and gives every
scan of a batch its own output names."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from amoseg.cli.main import main
from amoseg.inference.inputs import ScanInput, expand_input, unique_names


def _scan(path: Path, bright: int) -> Path:
    """A tiny CT whose `bright` first rows are above the threshold model's cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.full((16, 16, 3), -100, np.int16)
    data[:bright] = 400
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _predict(run: Path, *args: str) -> int:
    with pytest.raises(SystemExit) as exc:
        main(["predict", str(run), *args, "--device", "cpu"])
        raise SystemExit(0)
    return int(exc.value.code or 0)


def _liver_rows(path: Path) -> int:
    return int((np.asanyarray(nib.load(str(path)).dataobj)[:, 0, 0] == 6).sum())


def test_suffixes_never_take_another_inputs_name():
    items = [ScanInput(Path(f"{d}/x"), "nifti", n) for d, n in [("a", "ct"), ("b", "ct"),
             ("c", "ct_2"), ("d", "CT")]]  # fmt: skip
    names = [i.name for i in unique_names(items)]
    assert names == ["ct", "ct_3", "ct_2", "CT_4"]
    assert names == [i.name for i in unique_names(items)]  # deterministic


def test_same_file_names_in_a_batch_give_distinct_results(threshold_run, tmp_path, capsys):
    a = _scan(tmp_path / "a" / "ct.nii.gz", 2)
    b = _scan(tmp_path / "b" / "ct.nii.gz", 5)
    c = _scan(tmp_path / "c" / "ct_2.nii.gz", 9)
    out = tmp_path / "out"
    assert _predict(threshold_run, str(a), str(b), str(c), "-o", str(out)) == 0
    segs = sorted(p.name for p in out.glob("*_seg.nii.gz"))
    assert segs == ["ct_2_seg.nii.gz", "ct_3_seg.nii.gz", "ct_seg.nii.gz"]
    # each result is its own scan's: a → ct, b → ct_3, c → ct_2
    assert [_liver_rows(out / f"{n}_seg.nii.gz") for n in ("ct", "ct_3", "ct_2")] == [2, 5, 9]


def test_output_folder_equal_to_input_folder_keeps_the_users_label(threshold_run, tmp_path, capsys):
    folder = tmp_path / "case"
    _scan(folder / "ct.nii.gz", 3)
    label = folder / "ct_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 3), np.uint8), np.eye(4)), str(label))
    before = label.read_bytes()
    assert _predict(threshold_run, str(folder), "-o", str(folder)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "output exists" in err and "--overwrite" in err
    assert label.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["ct.nii.gz", "ct_seg.nii.gz"]
    # asked to overwrite: the label is replaced by the result, and never segmented as a scan
    assert _predict(threshold_run, str(folder), "-o", str(folder), "--overwrite") == 0
    assert not list(folder.glob("ct_seg_seg*")) and _liver_rows(label) == 3
    # a rerun into the same folder segments the scan only, not its own outputs
    assert _predict(threshold_run, str(folder), "-o", str(folder), "--overwrite") == 0
    assert sorted(p.name for p in folder.glob("*_seg.nii.gz")) == ["ct_seg.nii.gz"]


def test_existing_outputs_are_refused_unless_overwrite(threshold_run, tmp_path, capsys):
    scan = _scan(tmp_path / "in" / "ct.nii.gz", 4)
    out = tmp_path / "out"
    assert _predict(threshold_run, str(scan), "-o", str(out)) == 0
    stamp = (out / "ct_volumes.json").stat().st_mtime_ns
    assert _predict(threshold_run, str(scan), "-o", str(out)) == 2
    assert "output exists and 2 more" in capsys.readouterr().err
    assert (out / "ct_volumes.json").stat().st_mtime_ns == stamp
    assert _predict(threshold_run, str(scan), "-o", str(out), "--overwrite") == 0


def test_an_input_file_is_never_an_output_even_with_overwrite(threshold_run, tmp_path, capsys):
    scan = _scan(tmp_path / "ct.nii.gz", 2)
    other = _scan(tmp_path / "ct_seg.nii.gz", 6)  # a scan the user named like our output
    before = other.read_bytes()
    code = _predict(threshold_run, str(scan), str(other), "-o", str(tmp_path), "--overwrite")
    assert code == 2 and "would replace an input" in capsys.readouterr().err
    assert other.read_bytes() == before


def test_a_folder_of_label_maps_only_is_refused_in_one_line(tmp_path):
    from amoseg.errors import AmosegError

    _scan(tmp_path / "x_seg.nii.gz", 1)
    with pytest.raises(AmosegError, match="only label maps"):
        expand_input(tmp_path)
    # named explicitly, such a file is segmented as asked
    assert expand_input(tmp_path / "x_seg.nii.gz")[0].name == "x_seg"
