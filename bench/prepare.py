"""Benchmark `prepare` against its I/O floor: the time to merely decompress and read the same
.nii.gz files, measured in the same run. Goal: prepare ≤ 2× the floor per worker.

    .venv/bin/python bench/prepare.py --cases 6 --size 640 --workers 1 2
    .venv/bin/python bench/prepare.py --data /path/to/AMOS22 --cases 20

Without --data it builds a synthetic AMOS folder (amoseg.data.synth.generate_dataset when
available, else plain random volumes of --shape) in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from amoseg.data.amos import AmosCase  # noqa: E402
from amoseg.data.datasets import find_cases  # noqa: E402
from amoseg.data.nifti import label_array, load_nifti  # noqa: E402
from amoseg.preprocessing.geometry import canonical_view, volume_to_slices  # noqa: E402
from amoseg.store.prepare import prepare_dataset  # noqa: E402


def build_dataset(root: Path, cases: int, seed: int, preset: str, shape: tuple[int, ...]) -> str:
    try:
        from amoseg.data.synth import generate_dataset
    except ImportError:
        generate_dataset = None
    if generate_dataset is not None:
        generate_dataset(root, cases, seed, preset=preset)
        return f"amoseg synth --preset {preset}"
    rng = np.random.default_rng(seed)
    entries = []
    x, y, z = shape
    for i in range(cases):
        case_id = f"amos_{i + 1:04d}"
        # Smooth body + noise: compresses like CT, unlike pure noise.
        yy, xx = np.mgrid[:y, :x]
        body = (((xx - x / 2) / (0.45 * x)) ** 2 + ((yy - y / 2) / (0.35 * y)) ** 2) < 1
        image = np.where(body.T[..., None], 40, -1000) + rng.normal(0, 15, (x, y, z))
        label = np.zeros((x, y, z), np.uint16)
        label[x // 2 : x // 2 + x // 5, y // 3 : y // 2, z // 4 : 3 * z // 4] = 6
        label[x // 5 : x // 3, y // 2 : 2 * y // 3, z // 3 : z // 2] = 1
        affine = np.diag([-0.8, 0.8, 2.5, 1.0])
        for folder, data in (("imagesTr", image.astype(np.int16)), ("labelsTr", label)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, affine), str(root / folder / f"{case_id}.nii.gz"))
        entries.append(
            {"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"}
        )
    (root / "dataset.json").write_text(json.dumps({"training": entries, "validation": []}))
    return f"random volumes {shape}"


def read_floor(cases: list[AmosCase]) -> tuple[float, int]:
    """Seconds to decompress and read every image and label, and the voxel bytes read."""
    nbytes = 0
    start = time.perf_counter()
    for case in cases:
        for path in (case.image, case.label):
            nbytes += np.asarray(nib.load(str(path)).dataobj).nbytes
    return time.perf_counter() - start, nbytes


def stage_times(case: AmosCase, size: int) -> dict[str, float]:
    """Where one case's time goes (serial, this process), with prepare's own steps."""
    times = {}
    t = time.perf_counter()
    image_nii = load_nifti(case.image, "image")
    label = label_array(load_nifti(case.label, "label"))
    times["read"] = time.perf_counter() - t
    t = time.perf_counter()
    image = canonical_view(np.asarray(image_nii.dataobj), image_nii.affine)
    label = canonical_view(label, image_nii.affine)
    kept = np.flatnonzero(label.any(axis=(0, 1)))
    planes, label_planes = image[:, :, kept], label[:, :, kept]  # (X, Y, k) copies
    times["reorient + filter + gather"] = time.perf_counter() - t
    t = time.perf_counter()
    resized = volume_to_slices(planes, size, is_label=False)
    times["resize image"] = time.perf_counter() - t
    t = time.perf_counter()
    stack = torch.from_numpy(np.ascontiguousarray(np.moveaxis(planes, 2, 0)))[:, None].float()
    F.interpolate(stack, size=(size, size), mode="bilinear", align_corners=False)
    times["(same without antialias)"] = time.perf_counter() - t
    t = time.perf_counter()
    labels = volume_to_slices(label_planes, size, is_label=True)
    for start in range(0, len(labels), 16):  # per chunk, as prepare counts
        np.bincount(labels[start : start + 16].ravel(), minlength=16)
    times["resize + count label"] = time.perf_counter() - t
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "image.npy", np.rint(resized).astype(np.int16))
        np.save(Path(tmp) / "label.npy", labels)
    times["int16 + save"] = time.perf_counter() - t
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="an AMOS22 folder (default: synthetic)")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="demo", help="synth preset when generating")
    parser.add_argument("--shape", type=int, nargs=3, default=[512, 512, 40])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--keep", default="organ", choices=["organ", "all"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    torch.set_num_threads(1)  # as prepare's own workers: it scales over cases, not threads

    tmp = Path(tempfile.mkdtemp(prefix="amoseg-bench-prepare-"))
    try:
        root = args.data
        source = str(root)
        if root is None:
            root = tmp / "amos"
            t = time.perf_counter()
            source = build_dataset(root, args.cases, args.seed, args.preset, tuple(args.shape))
            print(f"built {args.cases} cases ({source}) in {time.perf_counter() - t:.1f} s")
        cases = find_cases(root)[: args.cases]
        if args.data is not None:  # prepare only the cases we time
            root = tmp / "subset"
            entries = [
                {"image": str(c.image.resolve()), "label": str(c.label.resolve())} for c in cases
            ]
            root.mkdir()
            (root / "dataset.json").write_text(json.dumps({"training": entries}))
        gz_mb = sum(c.image.stat().st_size + c.label.stat().st_size for c in cases) / 1e6
        read_floor(cases[:1])  # warm the page cache and imports
        floor_s, voxel_bytes = read_floor(cases)
        n = len(cases)
        print(f"{n} cases, {gz_mb:.1f} MB .nii.gz, {voxel_bytes / 1e6:.1f} MB voxels")
        print(f"size {args.size}, keep {args.keep}")
        print(
            f"I/O floor (decompress + read, 1 process): {floor_s:.2f} s = {n / floor_s:.2f} "
            f"cases/s, {gz_mb / floor_s:.1f} MB/s gz, {voxel_bytes / 1e6 / floor_s:.1f} MB/s raw"
        )
        stages = stage_times(cases[0], args.size)
        print("one case, stages: " + ", ".join(f"{k} {v:.3f} s" for k, v in stages.items()))
        for workers in args.workers:
            out = tmp / f"store_{workers}"
            t = time.perf_counter()
            prepare_dataset(
                root, out, size=args.size, keep=args.keep, workers=workers, progress=False
            )
            seconds = time.perf_counter() - t
            per_worker = seconds * min(workers, n) / n  # worker-seconds per case
            ratio = per_worker / (floor_s / n)
            print(
                f"prepare workers={workers}: {seconds:.2f} s = {n / seconds:.2f} cases/s, "
                f"{gz_mb / seconds:.1f} MB/s gz, {voxel_bytes / 1e6 / seconds:.1f} MB/s raw; "
                f"per worker {ratio:.2f}× the I/O floor (goal ≤ 2×)"
            )
            shutil.rmtree(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
