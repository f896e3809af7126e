"""Benchmark the metrics against numpy's bare bincount on the same arrays (the floor).

    .venv/bin/python bench/metrics.py                # 640x640x100 matrix, AMOS-size volume
    .venv/bin/python bench/metrics.py --repeat 5 --json bench_metrics.json

Goals (CPU): confusion matrix of a 640x640x100 pair < 0.5 s; all metrics of one AMOS-size
volume (512x512x~100, 15 organs: confusion matrix + Dice/IoU/NSD/HD95) < 5 s. The AMOS-size
volume is the real amos_0013 label (../shared/realdata) extended to 100 slices, against a
perturbed copy (shift, erosion of two organs, boundary noise, a missed organ); without the
real file it uses synthetic ellipsoid organs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amoseg.metrics.confusion import ConfusionMatrix, confusion_matrix  # noqa: E402
from amoseg.metrics.surface import volume_metrics  # noqa: E402

REAL_LABEL = REPO.parent / "shared" / "realdata" / "amos_0013_full_label.nii.gz"


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bare_bincount(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """The floor: one int64 index and one bincount, no checks."""
    return np.bincount((gt.astype(np.int64) * 16 + pred).ravel(order="K"), minlength=256)


def synthetic_organs(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint8)
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    for c in range(1, 16):
        centre = [rng.uniform(0.25, 0.75) * n for n in shape]
        radii = [rng.uniform(0.03, 0.15) * n for n in shape]
        inside = sum(((g - c0) / r) ** 2 for g, c0, r in zip(grid, centre, radii, strict=True))
        lab[inside <= 1] = c
    return lab


def all_metrics(pred: np.ndarray, gt: np.ndarray, spacing: tuple) -> dict:
    """What `amoseg score` computes per case (amoseg.metrics.score.score_case)."""
    m = confusion_matrix(pred, gt)
    return volume_metrics(pred, gt, spacing, 2.0, range(1, 16), matrix=m)


def amos_size_pair(
    rng: np.random.Generator, synthetic: bool
) -> tuple[np.ndarray, np.ndarray, tuple, str]:
    if REAL_LABEL.exists() and not synthetic:
        import nibabel as nib

        img = nib.load(str(REAL_LABEL))
        gt = np.asarray(img.dataobj).astype(np.uint8)
        extra = 100 - gt.shape[2]
        gt = np.concatenate([gt, gt[:, :, ::-1][:, :, :extra]], axis=2)  # 512x512x100
        spacing = tuple(round(float(z), 4) for z in img.header.get_zooms()[:3])
        source = f"real amos_0013 label extended to {gt.shape}"
    else:
        gt = synthetic_organs((512, 512, 100), rng)
        spacing = (0.8, 0.8, 5.0)
        source = f"synthetic ellipsoid organs {gt.shape}"
    pred = ndimage.shift(gt, (2, -2, 0), order=0)
    for c in (6, 7):  # erode liver and stomach by one voxel
        mask = pred == c
        pred[mask & ~ndimage.binary_erosion(mask)] = 0
    edge = ndimage.morphological_gradient(gt, size=3) > 0
    flip = edge & (rng.random(gt.shape) < 0.2)
    pred[flip] = 0
    pred[pred == 12] = 0  # one organ missed entirely (HD95 = inf path)
    # same memory layout as the ground truth, as for two NIfTI files (Fortran order)
    pred = np.asfortranarray(pred) if gt.flags.f_contiguous else np.ascontiguousarray(pred)
    return pred, gt, spacing, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--synthetic", action="store_true", help="ellipsoid organs, not amos_0013")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results: dict[str, float | str] = {}

    gt = rng.integers(0, 16, (640, 640, 100), dtype=np.uint8)
    pred = np.where(rng.random(gt.shape) < 0.9, gt, np.uint8(3)).astype(np.uint8)
    floor = best_of(lambda: bare_bincount(pred, gt), args.repeat)
    ours = best_of(lambda: ConfusionMatrix().update(pred, gt).matrix, args.repeat)
    results.update(cm_640_bincount_s=floor, cm_640_s=ours)
    print(
        f"confusion matrix 640x640x100: {ours:.3f} s  (numpy bincount {floor:.3f} s, "
        f"ratio {ours / floor:.2f}; goal < 0.5 s)"
    )

    pred, gt, spacing, source = amos_size_pair(rng, args.synthetic)
    floor = best_of(lambda: bare_bincount(pred, gt), args.repeat)
    ours = best_of(lambda: all_metrics(pred, gt, spacing), args.repeat)
    results.update(volume_source=source, volume_bincount_s=floor, volume_all_metrics_s=ours)
    print(
        f"all metrics, {source}, spacing {spacing}: {ours:.3f} s  (numpy bincount "
        f"{floor:.3f} s, ratio {ours / floor:.1f}; goal < 5 s)"
    )
    if args.json:
        from amoseg.atomic import write_json

        write_json(args.json, results)


if __name__ == "__main__":
    main()
