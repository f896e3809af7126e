"""Training throughput benchmark: amoseg's real training loop vs the bare network.

For `unet` and `unet-seed` (their own recipes: bf16 + channels_last on GPU for `unet`, fp32
for `unet-seed`) it measures, in one run on one device:

- train slices/s through amoseg's hot loop (`amoseg.training.trainer.run_epoch`): slices
  streamed from a slice store on disk by DataLoader workers, normalised, augmented (unet),
  forward, loss, backward, optimiser step;
- bare slices/s of the same network, loss and optimiser on random tensors already on the
  device (no data path, no augmentation);
- efficiency = train / bare (goal ≥ 0.8), and peak memory (GPU: max allocated; CPU: peak RSS
  of the measuring process);
- peak RSS of one data-loading pass over a 10-case and a 40-case store: it must not grow with
  the number of cases (slices are streamed, never cached).

Each measurement runs in a fresh subprocess so peak-RSS figures do not mix.

    python bench/train.py                          # CPU defaults: 160², batch 2, few steps
    python bench/train.py --device cuda --size 640 --batch-size 32 --steps 30 --compile
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_store(root: Path, cases: int, slices: int, size: int, seed: int = 0) -> Path:
    """A store of random-anatomy cases built from arrays (no synth/prepare: benchmark only),
    through the public `amoseg.store.store.create_store`."""
    from amoseg.planning.planner import seed_configuration
    from amoseg.store.slice_store import case_done
    from amoseg.store.store import create_store

    rng = np.random.default_rng(seed)
    ids = [f"amos_{i:04d}" for i in range(1, cases + 1)]
    n_val = max(1, cases // 10)
    splits = {"train": ids[n_val:], "val": ids[:n_val], "test": []}
    if all(case_done(root, cid) for cid in ids) and (root / "store.json").exists():
        return root
    yy, xx = np.mgrid[0:size, 0:size] / size
    volumes = []
    for cid in ids:
        label = np.zeros((slices, size, size), np.uint8)
        for cls in range(1, 16):
            cy, cx, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.03, 0.1)
            label[:, (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = cls
        image = (rng.normal(0, 30, label.shape) + label * 40.0 - 100).astype(np.int16)
        volumes.append((cid, np.moveaxis(image, 0, 2), np.moveaxis(label, 0, 2), np.eye(4)))
    create_store(
        root,
        volumes,
        configuration=seed_configuration(size, keep="all"),
        splits=splits,
        info={"seed": seed, "source": "bench"},
    )
    return root


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024  # Linux: KiB


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def phase_throughput(args: argparse.Namespace) -> dict:
    """train vs bare slices/s for one model (run in its own process)."""
    import torch

    from amoseg.models.registry import create_model
    from amoseg.store.slice_store import SliceStore
    from amoseg.training.data import EpochSampler, SliceDataset, make_loader
    from amoseg.training.trainer import run_epoch

    torch.manual_seed(0)
    store = SliceStore(args.store)
    model = create_model(args.model, input_size=store.size)
    model.to(args.device)
    device = model.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats()
    hp = type(model).store_hparams(store, model.hparams)
    if hp.get("class_weights") is not None:
        model.params = dataclasses.replace(model.params, **hp)
    opt = model.make_optimizer(1e-4, 0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    fwd = torch.compile(model.net) if args.compile else model.net
    bs, steps, warm = args.batch_size, args.steps, args.warmup
    gen = torch.Generator(device=device).manual_seed(0)

    # bare: random normalised inputs and labels already on the device
    c = 1 + 2 * model.context
    xs = torch.randn(bs, c, store.size, store.size, device=device)
    ys = torch.randint(0, 16, (bs, store.size, store.size), device=device)

    class Bare:
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            for _ in range(self.n):
                yield xs, ys

    net_norm = model.net.norm
    model.net.norm = torch.nn.Identity()  # bare inputs are already normalised
    augment = model.augment
    model.augment = lambda x, y, g: (x, y)
    run_epoch(model, fwd, Bare(warm), opt, sched, gen)
    _sync(device)
    t0 = time.perf_counter()
    loss, _ = run_epoch(model, fwd, Bare(steps), opt, sched, gen)
    float(loss)
    bare = steps * bs / (time.perf_counter() - t0)
    model.net.norm, model.augment = net_norm, augment

    # train: amoseg's data path from the on-disk store
    ds = SliceDataset(store, "train", model.context)
    sampler = EpochSampler(ds, seed=0, cap=(warm + steps) * bs)
    loader = make_loader(ds, sampler, bs, args.workers, pin_memory=device.type == "cuda")
    it = iter(loader)
    first = [next(it) for _ in range(warm)]
    run_epoch(model, fwd, first, opt, sched, gen)
    _sync(device)
    t0 = time.perf_counter()
    loss, n = run_epoch(model, fwd, it, opt, sched, gen)
    float(loss)
    train = n * bs / (time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    return {
        "model": args.model,
        "params": model.n_params,
        "train_sps": train,
        "bare_sps": bare,
        "efficiency": train / bare,
        "peak_mib": mem,
        "memory_kind": "GPU max allocated" if device.type == "cuda" else "peak RSS",
    }


def phase_loading(args: argparse.Namespace) -> dict:
    """Peak RSS of one full pass of the training DataLoader over the store."""
    from amoseg.store.slice_store import SliceStore
    from amoseg.training.data import EpochSampler, SliceDataset, make_loader

    store = SliceStore(args.store)
    ds = SliceDataset(store, "train", context=1)
    loader = make_loader(ds, EpochSampler(ds, seed=0), 8, args.workers, pin_memory=False)
    t0 = time.perf_counter()
    n = sum(x.shape[0] for x, _ in loader)
    return {
        "cases": sum(len(store.cases(k)) for k in ("train", "val", "test")),
        "slices": n,
        "peak_rss_mib": peak_rss_mib(),
        "seconds": time.perf_counter() - t0,
    }


def run_phase(phase: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase]
    for k, v in kw.items():
        if v is True:
            cmd.append(f"--{k.replace('_', '-')}")
        elif v is not False and v is not None:
            cmd += [f"--{k.replace('_', '-')}", str(v)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"phase {phase} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--size", type=int, default=None, help="slice size (default 640 on GPU, 160 on CPU)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="default 32 GPU / 2 CPU")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 30 GPU / 4 CPU)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--models", default="unet,unet-seed")
    p.add_argument("--rss-size", type=int, default=128, help="slice size of the RSS stores")
    p.add_argument("--skip-rss", action="store_true")
    p.add_argument("--work", type=Path, default=None, help="scratch folder for stores")
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    p.add_argument("--store", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        fn = phase_throughput if args.phase == "throughput" else phase_loading
        print(json.dumps(fn(args)))
        return

    import torch

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = "cuda" if cuda else "cpu"
    size = args.size or (640 if cuda else 160)
    bs = args.batch_size or (32 if cuda else 2)
    steps = args.steps or (30 if cuda else 4)
    warm = args.warmup if args.warmup is not None else (5 if cuda else 1)
    work = args.work or Path(tempfile.mkdtemp(prefix="amoseg-bench-"))
    slices = 16
    n_cases = max(3, -(-(warm + steps) * bs // slices) + 2)
    store = make_store(work / f"store{size}", n_cases, slices, size)
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    print(
        f"device: {name}; {size}², batch {bs}, {steps} timed steps after {warm} warm-up, "
        f"{args.workers} workers, compile={args.compile}"
    )
    rows = []
    for model in args.models.split(","):
        r = run_phase(
            "throughput",
            store=store,
            model=model,
            device=device,
            batch_size=bs,
            steps=steps,
            warmup=warm,
            workers=args.workers,
            compile=args.compile,
        )
        rows.append(r)
        print(
            f"  {r['model']:<10} {r['params']:>10,} params  train {r['train_sps']:8.1f} "
            f"slices/s  bare {r['bare_sps']:8.1f} slices/s  efficiency "
            f"{r['efficiency']:.2f}  {r['memory_kind']} {r['peak_mib']:.0f} MiB",
            flush=True,
        )
    loading = []
    if not args.skip_rss:
        for cases in (10, 40):
            st = make_store(work / f"rss{cases}", cases, 24, args.rss_size)
            loading.append(run_phase("loading", store=st, workers=args.workers))
    print(
        "\n| model | params | train slices/s | bare fwd+bwd slices/s | efficiency | peak memory |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['params']:,} | {r['train_sps']:.1f} | {r['bare_sps']:.1f} | "
            f"{r['efficiency']:.2f} | {r['peak_mib']:.0f} MiB ({r['memory_kind']}) |"
        )
    if loading:
        print(f"\n| store ({args.rss_size}²) | train slices | loading pass | peak RSS |")
        print("|---|---:|---:|---:|")
        for r in loading:
            print(
                f"| {r['cases']} cases | {r['slices']} | "
                f"{r['seconds']:.1f} s | {r['peak_rss_mib']:.0f} MiB |"
            )


if __name__ == "__main__":
    main()
