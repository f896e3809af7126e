"""Training throughput of `unet3d`: the shared trainer's hot loop (store patches with
foreground oversampling → on-device 3D augmentation → forward → deep-supervised Dice + CE →
AdamW step) against the same network's bare forward + backward + step on random tensors of
the same shape, in one run. Goal (issue 15): ratio ≥ 0.8 on GPU.

The store is synthetic (blobs in a body, built with `amoseg.store.store.create_store`), its
volumes larger than a patch so sampling, padding and augmentation all do real work.

    python bench/unet3d_train.py --threads 2                       # CPU, small network
    python bench/unet3d_train.py --device cuda --base 32 --patch 64 128 128 --batch 2 --steps 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_cases(n: int, shape: tuple[int, int, int], seed: int = 0) -> list:
    """(case_id, image, label, affine) in file order (X, Y, Z): organs as blobs in a body."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    cases = []
    for i in range(n):
        image = np.full(shape, -1000.0)
        label = np.zeros(shape, np.uint8)
        image[(x / 0.9) ** 2 + (y / 0.7) ** 2 < 1] = -50
        for organ, (cx, cy, r) in enumerate([(-0.4, 0.1, 0.3), (0.4, 0.1, 0.2), (0.0, -0.3, 0.15)]):
            blob = ((x - cx) ** 2 + (y - cy) ** 2 + (z / 1.5) ** 2) < r**2
            label[blob] = (6, 1, 8)[organ]
            image[blob] = (60, 120, 300)[organ]
        image += rng.normal(0, 20, shape)
        cases.append((f"case_{i:03d}", image.astype(np.int16), label, np.diag([1, 1, 2, 1.0])))
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", type=int, default=8)
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--patch", type=int, nargs=3, default=[32, 64, 64], help="z x y")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from amoseg.models.registry import create_model
    from amoseg.store.slice_store import SliceStore
    from amoseg.store.store import create_store
    from amoseg.training.data import EpochSampler, make_loader
    from amoseg.training.trainer import run_epoch

    z, x, y = args.patch
    with tempfile.TemporaryDirectory() as tmp:
        shape = (int(1.5 * x), int(1.5 * y), int(1.5 * z))
        root = create_store(Path(tmp) / "store", synthetic_cases(4, shape))
        store = SliceStore(root)
        hp = {"base": args.base, "stages": args.stages, "patch": args.patch}
        model = create_model("unet3d", input_size=store.size, **hp).to(args.device)
        dataset = model.train_dataset(store, seed=0)
        n = args.batch * (args.steps + 2)
        sampler = EpochSampler(dataset, cap=n)
        loader = make_loader(dataset, sampler, args.batch, args.workers, pin_memory=False)
        opt = model.make_optimizer(1e-3, 3e-5)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        gen = torch.Generator(device=model.device).manual_seed(0)

        def sync() -> None:
            if model.device.type == "cuda":
                torch.cuda.synchronize()

        batches = list(loader)  # the loop below times reading too: re-read from the store
        run_epoch(model, model.net, batches[:2], opt, sched, gen)  # warm-up
        sync()
        start = time.perf_counter()
        sampler.set_epoch(1)
        steps = 0
        for batch in loader:
            if steps == args.steps:
                break
            run_epoch(model, model.net, [batch], opt, sched, gen)
            steps += 1
        sync()
        loop = (time.perf_counter() - start) / steps
        xr = torch.randn(args.batch, 1, z, x, y, device=model.device)
        yr = torch.randint(0, 16, (args.batch, z, x, y), device=model.device)
        if model.use_fast_gpu:
            xr = xr.contiguous(memory_format=torch.channels_last_3d)
        model.net.train()
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            with model.autocast():
                out = model.net(xr, normalised=True)
            loss = model.loss(out, yr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        bare = (time.perf_counter() - start) / args.steps
    result = {
        "device": args.device, "threads": args.threads, "patch_zxy": args.patch,
        "batch": args.batch, "base": args.base, "stages": args.stages, "steps": args.steps,
        "n_params": model.n_params, "loop_s_per_step": round(loop, 4),
        "bare_s_per_step": round(bare, 4), "ratio_bare_to_loop": round(bare / loop, 3),
    }  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
