"""Seconds per 512×512×100 CT for `amoseg predict` with `unet3d` (without and with TTA)
against the 2D `unet` on the same scan, all in one run, random weights (speed does not
depend on them).

Goal (issue 15): on CPU, unet3d without TTA ≤ 2× the 2D model's time; on an H100/H200 < 1 s
end to end without TTA. unet3d predicts on the plan's `3d` grid (pass the plan.json that
`amoseg plan` wrote for the data the model would be trained on; without one, on the scan's
own slices resized to --size like a seed store); the 2D model is the default `unet` at the
default input size (body crop, auto precision), as bench/predict.py measures it.

    python bench/unet3d_predict.py --plan plan.json --threads 2
    python bench/unet3d_predict.py --plan plan.json --device cuda --repeats 3
    python bench/unet3d_predict.py --plan plan.json --skip-tta --variants 32:0.25 16:0.5

`--variants BASE:OVERLAP ...` also times cheaper unet3d settings (first-stage width, sliding-
window overlap) without TTA against the same 2D time: what a CPU default would cost.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict import default_input_size, synthetic_ct


def unet3d_backend(plan: Path | None, device: str, base: int, size: int, overlap: float = 0.5):
    from amoseg.inference.backends import backend_for_model
    from amoseg.models.registry import create_model

    patch, pre = (128, 128, 64), None  # (x, y, z)
    if plan is not None:
        from amoseg.planning.plan import load_plan

        config = load_plan(plan).configuration("3d")
        patch, pre = tuple(config.patch_size), config.preprocessor("ct")
    model = create_model(
        "unet3d", input_size=size, base=base, patch_size=list(patch), norm="window",
        window=[-1000.0, 1000.0], overlap=overlap,
    ).to(device)  # fmt: skip
    backend = backend_for_model(model, device=device)
    backend.preprocessor = pre
    return backend, patch


def unet2d_backend(device: str, size: int):
    from amoseg.inference.backends import backend_for_model
    from amoseg.models.registry import create_model

    model = create_model("unet", input_size=size, norm="window", window=[-1000.0, 1000.0])
    backend = backend_for_model(model.to(device), device=device)
    backend.preprocessor = None
    return backend


def seconds(backend, data, affine, repeats: int) -> tuple[float, dict]:
    from amoseg.inference.pipeline import StageTimes
    from amoseg.inference.predict import segment_scan

    if backend.device.type == "cuda":
        segment_scan(backend, data, affine)  # warm-up (allocations, cuDNN autotuning)
    runs, stages = [], {}
    for _ in range(repeats):
        times = StageTimes(backend.device)
        start = time.perf_counter()
        segment_scan(backend, data, affine, times=times)
        runs.append(time.perf_counter() - start)
        stages = {k: round(v, 3) for k, v in times.seconds.items()}
    return statistics.median(runs), stages


def parse_variant(text: str) -> tuple[int, float]:
    """'16:0.25' → (16, 0.25): a unet3d first-stage width and sliding-window overlap."""
    base, sep, overlap = text.partition(":")
    try:
        b, o = int(base), float(overlap)
    except ValueError:
        b, o = 0, -1.0
    if not sep or b < 1 or not 0 <= o < 1:
        raise ValueError(f"--variants {text!r}: expected BASE:OVERLAP, e.g. 16:0.25")
    return b, o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", type=Path, help="plan.json with a 3d configuration")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--base", type=int, default=32, help="unet3d first-stage channels")
    ap.add_argument(
        "--overlap", type=float, default=0.5, help="unet3d sliding-window overlap (0 ≤ o < 1)"
    )
    ap.add_argument(
        "--variants", nargs="+", default=[], metavar="BASE:OVERLAP",
        help="also time unet3d without TTA at these (base, overlap) settings, e.g. 16:0.25",
    )  # fmt: skip
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 100])
    ap.add_argument("--skip-tta", action="store_true", help="time unet3d without TTA only")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    try:
        variants = [parse_variant(v) for v in args.variants]
    except ValueError as err:
        ap.error(str(err))
    if not 0 <= args.overlap < 1:
        ap.error("--overlap must be at least 0 and below 1")
    torch.set_num_threads(args.threads)
    from amoseg.ops.tta import MirroredBackend

    size = default_input_size()
    with tempfile.TemporaryDirectory() as tmp:
        img = nib.load(str(synthetic_ct(Path(tmp) / "ct.nii.gz", tuple(args.shape))))
        data, affine = np.asarray(img.dataobj), img.affine
    b3, patch = unet3d_backend(args.plan, args.device, args.base, size, args.overlap)
    b2 = unet2d_backend(args.device, size)
    t2, s2 = seconds(b2, data, affine, args.repeats)
    print(f"unet: {t2:.2f} s", flush=True)
    t3, s3 = seconds(b3, data, affine, args.repeats)
    print(f"unet3d: {t3:.2f} s", flush=True)
    t3t, s3t = (
        (math.nan, {})
        if args.skip_tta
        else seconds(MirroredBackend(b3), data, affine, args.repeats)
    )
    timed = []
    for base, overlap in variants:
        backend, _ = unet3d_backend(args.plan, args.device, base, size, overlap)
        t, stages = seconds(backend, data, affine, args.repeats)
        print(f"unet3d base {base}, overlap {overlap}: {t:.2f} s", flush=True)
        timed.append({
            "base": base, "overlap": overlap, "unet3d_s": round(t, 2),
            "ratio_to_unet": round(t / t2, 2), "stages": stages,
        })  # fmt: skip
    result = {
        "device": args.device, "threads": args.threads, "shape": args.shape, "patch_xyz": patch,
        "plan": str(args.plan) if args.plan else None, "unet3d_base": args.base,
        "overlap": args.overlap,
        "unet_s": round(t2, 2), "unet3d_s": round(t3, 2), "unet3d_tta_s": round(t3t, 2),
        "ratio_unet3d_to_unet": round(t3 / t2, 2), "ratio_tta_to_no_tta": round(t3t / t3, 2),
        "stages": {"unet": s2, "unet3d": s3, "unet3d_tta": s3t}, "variants": timed,
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
