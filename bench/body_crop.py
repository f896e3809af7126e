"""Does the body crop change what a U-Net predicts? Test-set Dice with and without it.

Two steps, because training is the slow part and is done with the normal CLI:

    python bench/body_crop.py pad SYN SYN_PADDED --fraction 0.3   # air around each scan
    amoseg prepare SYN_PADDED store --size 128
    amoseg train unet --data store --out run_crop  --hparams '{"base": 16}' ...
    amoseg train unet --data store --out run_whole --hparams '{"base": 16, "body_crop": false}' ...
    python bench/body_crop.py compare store run_crop run_whole

`pad` widens every scan of an AMOS-layout folder (e.g. from `amoseg synth`) by `fraction` of
its width on each side with air (−1024 HU, label 0), shifting the affine so the anatomy stays
put: the synthetic bodies fill their frame, real CT has a wider field of view (on the real
`amos_0001` the body box is 38 % of the slice). `compare` scores each run's test split with
the crop on and off (whatever the run was trained with) and prints mean organ Dice, mIoU and
how many voxels change.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import torch


def pad(src: Path, dst: Path, fraction: float) -> None:
    dst.mkdir(parents=True, exist_ok=False)
    for item in src.iterdir():
        if item.is_file():
            shutil.copy(item, dst / item.name)
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / folder.name).mkdir()
        fill = 0 if folder.name.startswith("labels") else -1024
        for path in sorted(folder.glob("*.nii.gz")):
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
            px, py = int(data.shape[0] * fraction), int(data.shape[1] * fraction)
            out = np.pad(data, ((px, px), (py, py), (0, 0)), constant_values=fill)
            affine = img.affine.copy()
            affine[:3, 3] -= affine[:3, :3] @ np.array([px, py, 0])
            padded = nib.Nifti1Image(out.astype(data.dtype), affine, img.header)
            padded.set_qform(affine, code=1)
            padded.set_sform(affine, code=1)
            nib.save(padded, str(dst / folder.name / path.name))
    print(f"padded {src} by {fraction:.0%} per side → {dst}")


def box_area(box: tuple[slice, slice]) -> int:
    return (box[0].stop - box[0].start) * (box[1].stop - box[1].start)


def compare(store_dir: Path, runs: list[Path]) -> None:
    from amoseg.metrics.confusion import ConfusionMatrix, mean_dice, mean_iou
    from amoseg.models.unet import BODY_HU
    from amoseg.ops.inferers import model_labels
    from amoseg.preprocessing.crop import body_box
    from amoseg.store.slice_store import SliceStore
    from amoseg.training import load_run

    store = SliceStore(store_dir)
    cases = store.cases("test")
    shares = []
    for case in cases:
        image = np.asarray(store.image(case))
        box = body_box(image, BODY_HU, 16)
        shares.append(1.0 if box is None else box_area(box) / image.shape[-1] ** 2)
    print(f"body box: {min(shares):.0%}–{max(shares):.0%} of the slice ({len(cases)} scans)")
    for run in runs:
        model = load_run(run, device="cpu")
        trained = bool(model.hparams.get("body_crop", False))
        labels = {}
        for crop in (True, False):
            model.params = dataclasses.replace(model.params, body_crop=crop)
            cm = ConfusionMatrix()
            labels[crop] = []
            for case in cases:
                pred = model_labels(model, store.image(case), batch_size=16)
                cm.update(torch.from_numpy(pred), torch.from_numpy(np.array(store.label(case))))
                labels[crop].append(pred.ravel())
            print(
                f"{run.name}: trained with crop {trained!s:5}, predicted with crop {crop!s:5}: "
                f"test mean organ Dice {mean_dice(cm.matrix):.4f}, mIoU {mean_iou(cm.matrix):.4f}"
            )
        a, b = np.concatenate(labels[True]), np.concatenate(labels[False])
        organ = (a > 0) | (b > 0)
        print(
            f"  crop vs whole slices: {np.mean(a == b):.2%} of voxels agree, "
            f"{np.mean(a[organ] == b[organ]):.2%} of organ voxels"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pad", help="add air around every scan of an AMOS-layout folder")
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--fraction", type=float, default=0.3)
    c = sub.add_parser("compare", help="test Dice of runs with the crop on and off")
    c.add_argument("store", type=Path)
    c.add_argument("runs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "pad":
        pad(args.src, args.dst, args.fraction)
    else:
        compare(args.store, args.runs)


if __name__ == "__main__":
    main()
