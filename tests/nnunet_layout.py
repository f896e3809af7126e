"""Convert an AMOS-format folder into an nnU-Net v2 raw dataset, as nnU-Net's own AMOS
conversion does (every labelled case into imagesTr/<case>_0000.nii.gz + labelsTr/<case>.nii.gz,
dataset.json with channel_names, labels name → id, numTraining, file_ending).

`order` renumbers the classes (a dataset whose label ids differ from AMOS's, with AMOS organ
names): the label files are rewritten so that the same voxels keep the same organ.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.data.datasets import find_cases
from amoseg.labels import AMOS_DATASET_LABELS, NUM_CLASSES


def to_nnunet(
    amos_root: Path,
    out: Path,
    order: list[int] | None = None,
    channel: str = "CT",
) -> Path:
    """Write `out` (DatasetNNN_Name-style folder) from `amos_root`; returns `out`.

    `order[new_id] = amos_id`: the class written as id `new_id` (background stays 0).
    """
    order = list(range(NUM_CLASSES)) if order is None else order
    assert order[0] == 0 and sorted(order) == sorted(set(order))
    new_id_of = np.zeros(NUM_CLASSES, dtype=np.uint16)
    for new_id, amos_id in enumerate(order):
        new_id_of[amos_id] = new_id
    (out / "imagesTr").mkdir(parents=True)
    (out / "labelsTr").mkdir()
    cases = find_cases(amos_root)
    for case in cases:
        shutil.copy(case.image, out / "imagesTr" / f"{case.case_id}_0000.nii.gz")
        target = out / "labelsTr" / f"{case.case_id}.nii.gz"
        if order == list(range(NUM_CLASSES)):
            shutil.copy(case.label, target)
            continue
        img = nib.load(str(case.label))
        ids = np.asarray(img.dataobj).astype(np.int64)
        relabelled = nib.Nifti1Image(new_id_of[ids].astype(np.uint8), img.affine, img.header)
        relabelled.set_data_dtype(np.uint8)
        nib.save(relabelled, str(target))
    spec = {
        "channel_names": {"0": channel},
        "labels": {AMOS_DATASET_LABELS[str(amos_id)]: n for n, amos_id in enumerate(order)},
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": "AMOS converted by amoseg's tests",
    }
    (out / "dataset.json").write_text(json.dumps(spec, indent=2))
    return out


def to_nnunet_v1(amos_root: Path, out: Path, order: list[int] | None = None) -> Path:
    """The same files as `to_nnunet`, listed as an nnU-Net v1 task does: a "training" list
    naming `imagesTr/<case>.nii.gz` (the files on disk are `<case>_0000.nii.gz`), "modality"
    and labels id → name."""
    to_nnunet(amos_root, out, order)
    v2 = json.loads((out / "dataset.json").read_text())
    ids = sorted(p.name.removesuffix("_0000.nii.gz") for p in (out / "imagesTr").iterdir())
    spec = {
        "name": "AMOS converted by amoseg's tests (nnU-Net v1)",
        "modality": v2["channel_names"],
        "labels": {str(i): name for name, i in v2["labels"].items()},
        "numTraining": len(ids),
        "training": [
            {"image": f"./imagesTr/{i}.nii.gz", "label": f"./labelsTr/{i}.nii.gz"} for i in ids
        ],
        "test": [],
    }
    (out / "dataset.json").write_text(json.dumps(spec, indent=2))
    return out
