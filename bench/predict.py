"""Seconds per volume for `amoseg predict` on a 512×512×100 synthetic CT, by stage.

Goals (issue 6): < 20 s per volume on 2 CPU cores and < 1 s end to end on an H100 with the
default `unet`, and < 20 % of the time outside the network forward pass. The model has
random weights (speed does not depend on them) and is built through the registry at the
default `prepare` input size unless --size says otherwise.

    python bench/predict.py                      # CPU, the defaults (body crop, auto precision)
    python bench/predict.py --reference          # + fp32 whole slices in the same run, as a ratio
    python bench/predict.py --device cuda        # GPU
    python bench/predict.py --device cuda --size 512 --batch-size 64 --json out.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

STAGES = ("load", "preprocess", "forward", "resize_back", "write")


def default_input_size() -> int:
    try:
        from amoseg.store.prepare import prepare_dataset

        return int(inspect.signature(prepare_dataset).parameters["size"].default)
    except (ImportError, KeyError):
        return 640


def synthetic_ct(path: Path, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """A body-shaped int16 CT (air, fat, soft tissue, bright blobs, the table under the
    patient), LAS like AMOS. The body spans 85 % of the width and 65 % of the height: a
    looser fit than the real `amos_0001` (75 % × 50 %), so the body crop gains less here."""
    rng = np.random.default_rng(seed)
    nx, ny, _ = shape
    x, y = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    organ = ((x - 0.3) / 0.3) ** 2 + ((y + 0.1) / 0.25) ** 2 < 1
    table = (np.abs(x) < 0.95) & (y > -0.8) & (y < -0.72)  # posterior (RAS y), below the body
    data = np.full(shape, -1000, np.int16)
    data[body] = -80
    data[organ] = 60
    data[table] = 300
    data += rng.normal(0, 20, shape).astype(np.int16)
    affine = np.diag([-0.78, 0.78, 2.5, 1.0])
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def write_realistic_seconds(scan: Path, out: Path) -> float:
    """The write stage for a label map that looks like a trained model's (a few compact
    organs), because a random-weight network's noisy map compresses ~3× slower."""
    from amoseg.data.nifti import save_nifti
    from amoseg.inference import label_image_like, organ_volumes, write_volumes

    img = nib.load(str(scan))
    data = np.asanyarray(img.dataobj)
    labels = np.zeros(data.shape, np.uint8)
    nx, ny, _ = data.shape
    for k, (x, y) in enumerate([(0.3, 0.4), (0.6, 0.5), (0.45, 0.7)], start=1):
        labels[int(x * nx) : int(x * nx) + nx // 6, int(y * ny) : int(y * ny) + ny // 8, :] = k
    start = time.perf_counter()
    save_nifti(label_image_like(labels, img), out / "ct_seg.nii.gz")
    rows = organ_volumes(labels, data, img.affine)
    write_volumes(rows, out / "ct_volumes.csv", out / "ct_volumes.json", {})
    return time.perf_counter() - start


def measure(backend, item, out: Path, batch: int, repeats: int) -> tuple[dict, list, float]:
    """Median seconds per stage over `repeats` runs after one warm-up (cuDNN, allocator,
    oneDNN primitives), and the share of each slice the network actually saw (body crop)."""
    from amoseg.inference.predict import predict_scan

    seen: list[tuple[int, int]] = []
    scores = backend.scores
    backend.scores = lambda x: (seen.append(tuple(x.shape[-2:])), scores(x))[1]
    predict_scan(backend, item, out, batch_size=batch, overwrite=True)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = predict_scan(backend, item, out, batch_size=batch, overwrite=True)
        runs.append({"total": time.perf_counter() - start, **result.stages})
    median = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in ("total", *STAGES)}
    return median, runs, seen[-1][0] * seen[-1][1] / backend.input_size**2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--model", default="unet")
    ap.add_argument(
        "--size", type=int, default=None, help="model input size S (default: prepare's)"
    )
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 100))
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all)")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx"))
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    ap.add_argument("--no-crop", action="store_true", help="score whole slices")
    ap.add_argument(
        "--reference",
        action="store_true",
        help="also time fp32 whole slices (the previous default) in this run: a speed-up ratio",
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    from amoseg.inference import OnnxBackend, ScanInput, backend_for_model, export_onnx
    from amoseg.inference.predict import default_batch_size
    from amoseg.models.registry import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size or default_input_size()
    model = create_model(args.model, input_size=size)
    tmp = Path(tempfile.mkdtemp(prefix="amoseg-bench-"))

    def make_backend(precision: str, crop: bool):
        if args.backend == "onnx":
            backend = OnnxBackend(export_onnx(model, tmp / "model.onnx"), device=args.device)
        else:
            backend = backend_for_model(model, device=args.device, precision=precision)
        if not crop:
            backend.body_threshold = None
        return backend

    backend = make_backend(args.precision, not args.no_crop)
    batch = args.batch_size or default_batch_size(backend)
    scan = synthetic_ct(tmp / "ct.nii.gz", tuple(args.shape))
    item = ScanInput(scan, "nifti", "ct")
    device_name = (
        torch.cuda.get_device_name(backend.device)
        if backend.device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    bf16 = getattr(backend, "bf16", False)
    print(
        f"model {args.model} S={size} batch={batch} backend={args.backend} "
        f"precision={'bf16' if bf16 else 'fp32'} on {device_name}; volume {tuple(args.shape)}"
    )
    median, runs, seen = measure(backend, item, tmp / "out", batch, args.repeats)
    total = median["total"]
    print(f"network input: {100 * seen:.0f}% of each {size}x{size} slice (body crop)")
    print(f"{'stage':<14}{'seconds':>10}{'share':>9}")
    for stage in STAGES:
        print(f"{stage:<14}{median[stage]:>10.3f}{100 * median[stage] / total:>8.1f}%")
    outside = 1 - median["forward"] / total
    goal = 1 if backend.device.type == "cuda" else 20
    print(f"{'total':<14}{total:>10.3f}{100.0:>8.1f}%")
    print(
        f"outside the forward pass: {100 * outside:.1f}% (goal < 20%); "
        f"seconds per volume: {total:.2f} (goal < {goal} s)"
    )
    realistic = write_realistic_seconds(scan, tmp / "realistic")
    print(
        f"write with organ-like labels instead of random-weight noise: {realistic:.3f} s "
        f"(end to end ≈ {total - median['write'] + realistic:.2f} s)"
    )
    figures = {"device": device_name, "model": args.model, "size": size, "batch": batch,
               "backend": args.backend, "bf16": bf16, "shape": list(args.shape),
               "median": median, "network_input_share": seen, "write_realistic": realistic,
               "outside_forward_share": outside, "runs": runs}  # fmt: skip
    if args.reference:
        ref, _, _ = measure(make_backend("fp32", False), item, tmp / "ref", batch, 1)
        print(
            f"reference, fp32 whole slices: {ref['total']:.2f} s per volume "
            f"(forward {ref['forward']:.2f} s); speed-up {ref['total'] / total:.2f}x"
        )
        figures["reference"] = ref
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
