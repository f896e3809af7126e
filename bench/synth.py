"""Benchmark `amoseg synth`: seconds and cases/s for N demo cases, against the I/O floor.

The floor is measured in the same run: gzip-writing N random int16 volumes (plus uint8
labels) of the very same shapes with nibabel, i.e. what writing the dataset costs with no
anatomy rendered at all. Goal: 30 demo cases in < 60 s on 2 cores.

    .venv/bin/python bench/synth.py [--cases 30] [--seed 0] [--preset demo]
    .venv/bin/python bench/synth.py --modality mixed --workers 2   # also times 2 processes

With --workers N > 1 the same dataset is generated again with N processes and the speed-up
over one process is printed (the files are identical; tests/test_synth_mr.py checks that).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from amoseg.atomic import read_json
from amoseg.data.synth import generate_dataset


def io_floor(root: Path, out: Path) -> float:
    """Seconds to gzip-write random volumes shaped like every scan in `root`."""
    meta = read_json(root / "dataset.json")
    entries = meta["training"] + meta["validation"] + meta["test"]
    rng = np.random.default_rng(0)
    shapes = []
    for entry in entries:
        img = nib.load(root / entry["image"])
        shapes.append((img.shape, img.affine))
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, (shape, affine) in enumerate(shapes):
        image = rng.integers(-1024, 400, size=shape, dtype=np.int16)
        label = (rng.random(shape) < 0.04).astype(np.uint8)
        nib.save(nib.Nifti1Image(image, affine), str(out / f"img_{i}.nii.gz"))
        nib.save(nib.Nifti1Image(label, affine), str(out / f"lab_{i}.nii.gz"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="demo", choices=("demo", "full"))
    parser.add_argument("--modality", default="ct", choices=("ct", "mr", "mixed"))
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="amoseg_bench_synth_") as tmp:
        start = time.perf_counter()
        root = generate_dataset(
            Path(tmp) / "ds", args.cases, args.seed, args.preset, False, modality=args.modality
        )
        seconds = time.perf_counter() - start
        parallel = None
        if args.workers > 1:
            start = time.perf_counter()
            generate_dataset(
                Path(tmp) / "ds_parallel", args.cases, args.seed, args.preset, False,
                modality=args.modality, workers=args.workers,
            )  # fmt: skip
            parallel = time.perf_counter() - start
        floor = io_floor(root, Path(tmp) / "floor")
        size_mb = sum(p.stat().st_size for p in root.rglob("*.nii.gz")) / 2**20
    print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    print(
        f"synth {args.cases} {args.preset} {args.modality} cases: {seconds:.1f} s, "
        f"{args.cases / seconds:.2f} cases/s, {size_mb:.0f} MB written"
    )
    print(f"I/O floor (gzip-write same shapes): {floor:.1f} s -> ratio {seconds / floor:.1f}x")
    if parallel is not None:
        print(
            f"--workers {args.workers}: {parallel:.1f} s -> {seconds / parallel:.2f}x the speed "
            "of one process"
        )
    if args.preset == "demo":
        goal = 60.0 * args.cases / 30
        print(f"goal < {goal:.0f} s: {'met' if seconds < goal else 'NOT met'}")


if __name__ == "__main__":
    main()
