"""Does the modern `unet` recipe beat the report's `unet-seed` at equal epochs?

Trains both on the same store for the same number of epochs (the demo's network size and
per-model hyper-parameters, `amoseg.reports.demo.PLAN`), evaluates both on the test split and
prints test mIoU / mean organ Dice side by side, with the ratio.

    python bench/unet_vs_seed.py                       # builds the demo store (24 cases, 64²)
    python bench/unet_vs_seed.py --data STORE --epochs 8 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_store(work: Path, cases: int, size: int) -> Path:
    from amoseg.data.synth import generate_dataset
    from amoseg.store.prepare import prepare_dataset

    generate_dataset(work / "amos", cases, 0, "demo", progress=False)
    prepare_dataset(work / "amos", work / "store", size=size, keep="organ", seed=0, progress=False)
    return work / "store"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="prepared store (default: build one)")
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--epochs", type=int, nargs="+", default=[8])
    p.add_argument("--device", default="cpu")
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args()

    import torch

    from amoseg.reports.demo import PLAN
    from amoseg.reports.evaluate import evaluate_run
    from amoseg.training import TrainSettings, train

    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = args.work or Path(tempfile.mkdtemp(prefix="amoseg-unet-vs-seed-"))
    store = args.data or build_store(work, args.cases, args.size)
    print(f"store: {store}   device: {args.device}   torch threads: {torch.get_num_threads()}")
    print("| epochs | model | test mIoU % | mean organ Dice % | accuracy % | train s |")
    print("|---:|---|---:|---:|---:|---:|")
    for epochs in args.epochs:
        scores = {}
        for name in ("unet-seed", "unet"):
            hparams = PLAN[name].get("hparams", {})
            run = work / f"{name}-e{epochs}"
            start = time.perf_counter()
            train(
                name,
                store,
                run,
                TrainSettings(epochs=epochs, device=args.device, hparams=hparams, progress=False),
            )
            seconds = time.perf_counter() - start
            m = evaluate_run(run, store, "test", device=args.device, progress=False)
            scores[name] = m
            print(
                f"| {epochs} | {name} | {100 * m['miou']:.2f} | {100 * m['mean_dice']:.2f} | "
                f"{100 * m['accuracy']:.2f} | {seconds:.0f} |",
                flush=True,
            )
        ratio_iou = scores["unet"]["miou"] / max(scores["unet-seed"]["miou"], 1e-9)
        ratio_dice = scores["unet"]["mean_dice"] / max(scores["unet-seed"]["mean_dice"], 1e-9)
        print(f"epochs {epochs}: unet / unet-seed = {ratio_iou:.2f}× mIoU, {ratio_dice:.2f}× Dice")


if __name__ == "__main__":
    main()
