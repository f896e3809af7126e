"""Does nnU-Net-style planning pay? `unet` on the planned `2d` configuration vs the report's
`seed` configuration (every slice resized to S×S), trained for the same wall-clock time on
the same machine, scored by the native-grid evaluate (3D Dice and NSD per organ on each test
scan's original grid, all slices: what `amoseg predict` + `amoseg score` report).

    nice -n 10 python bench/plan_2d_vs_seed.py --data /work/data/synth-full-30 \\
        --work /work/scratch/bench-plan --minutes 8

Steps: `amoseg plan` → `amoseg prepare --configuration 2d` and `--configuration seed` (same
split seed, so the same test scans; checked) → per configuration, a one-epoch probe measures
seconds per training slice and per validation pass, then `unet` trains `--epochs` epochs
whose slice cap fills `--minutes` → `evaluate_run` (native + report-style). Prints a Markdown
table per organ and the means, and writes WORK/results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CONFIGURATIONS = ("2d", "seed")


def amoseg(*args: str) -> None:
    """Run one amoseg command (the interface contract's commands, as a user would)."""
    cmd = [sys.executable, "-m", "amoseg", *args]
    print("$ amoseg " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def prepare(data: Path, work: Path, name: str) -> Path:
    store = work / f"store-{name}"
    if not (store / "store.json").exists():
        amoseg("prepare", str(data), str(store), "--plan", str(work / "plan.json"),
               "--configuration", name, "--seed", "0", "--quiet")  # fmt: skip
    return store


def settings(epochs: int, slices: int | None, hparams: dict) -> object:
    from amoseg.training import TrainSettings

    return TrainSettings(
        epochs=epochs, device="cpu", seed=0, num_workers=0, progress=False,
        max_slices_per_epoch=slices, hparams=hparams,
    )  # fmt: skip


def probe(store: Path, work: Path, name: str, slices: int, hparams: dict) -> tuple:
    """(seconds per training slice, seconds per validation pass) from a one-epoch run."""
    from amoseg.data.slice_store import SliceStore
    from amoseg.training import load_run, train
    from amoseg.training.trainer import validate

    run = work / f"probe-{name}"
    if not (run / "summary.json").exists():
        train("unet", store, run, settings(1, slices, hparams))
    epoch_s = float((run / "log.csv").read_text().splitlines()[1].split(",")[6])  # seconds
    st = SliceStore(store)
    model = load_run(run, device="cpu")
    start = time.perf_counter()
    validate(model, st, st.cases("val"))
    val_s = time.perf_counter() - start
    return max(1e-3, (epoch_s - val_s) / slices), val_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="AMOS-format root (synthetic)")
    p.add_argument("--work", type=Path, required=True, help="scratch folder (stores, runs)")
    p.add_argument("--minutes", type=float, default=8.0, help="training budget per model")
    p.add_argument("--epochs", type=int, default=2, help="epochs the budget is split into")
    p.add_argument("--probe-slices", type=int, default=24)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--hparams", default="{}", help="unet hyper-parameters (JSON), both runs")
    args = p.parse_args()

    import torch

    from amoseg.data.slice_store import SliceStore
    from amoseg.reports.evaluate import evaluate_run
    from amoseg.training import train

    torch.set_num_threads(args.threads)
    hparams = json.loads(args.hparams)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    if not (work / "plan.json").exists():
        amoseg("plan", str(args.data), "-o", str(work / "plan.json"))
    stores = {name: prepare(args.data, work, name) for name in CONFIGURATIONS}
    tests = {name: SliceStore(s).cases("test") for name, s in stores.items()}
    if len({tuple(t) for t in tests.values()}) != 1:
        raise SystemExit(f"the stores' test splits differ: {tests}")

    budget = 60.0 * args.minutes
    results: dict[str, dict] = {}
    for name in CONFIGURATIONS:
        per_slice, val_s = probe(stores[name], work, name, args.probe_slices, hparams)
        slices = max(4, int((budget / args.epochs - val_s) / per_slice))
        run = work / f"unet-{name}"
        print(f"[{name}] {per_slice:.2f} s/slice, validation {val_s:.0f} s → "
              f"{args.epochs} epochs × {slices} slices", flush=True)  # fmt: skip
        if not (run / "summary.json").exists():
            train("unet", stores[name], run, settings(args.epochs, slices, hparams))
        summary = json.loads((run / "summary.json").read_text())
        start = time.perf_counter()
        metrics = evaluate_run(run, stores[name], "test", device="cpu", progress=False)
        results[name] = {
            "train_seconds": summary["train_seconds"],
            "epochs": args.epochs,
            "slices_per_epoch": slices,
            "evaluate_seconds": round(time.perf_counter() - start, 1),
            "native": {k: metrics["native"][k] for k in ("mean_dice", "mean_nsd", "per_organ")},
            "report_style": {k: metrics[k] for k in ("accuracy", "miou", "mean_dice")},
        }
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, "
        f"torch {torch.__version__} ({args.threads} threads); load average before "
        f"{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}"
    )
    out = {
        "date": started,
        "machine": machine,
        "data": str(args.data),
        "test_cases": tests["2d"],
        "budget_minutes": args.minutes,
        "results": results,
    }
    (work / "results.json").write_text(json.dumps(out, indent=2))

    a, b = results["2d"], results["seed"]
    print(f"\n{started}; {machine}; data {args.data}; test scans: {', '.join(tests['2d'])}\n")
    print("| organ | 2d Dice % | seed Dice % | 2d NSD % | seed NSD % |")
    print("|---|---:|---:|---:|---:|")

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    for organ, row in a["native"]["per_organ"].items():
        other = b["native"]["per_organ"][organ]
        print(f"| {organ} | {pct(row['dice'])} | {pct(other['dice'])} | "
              f"{pct(row['nsd'])} | {pct(other['nsd'])} |")  # fmt: skip
    na, nb = a["native"], b["native"]
    print(f"| **mean** | **{pct(na['mean_dice'])}** | **{pct(nb['mean_dice'])}** | "
          f"**{pct(na['mean_nsd'])}** | **{pct(nb['mean_nsd'])}** |")  # fmt: skip
    for name in CONFIGURATIONS:
        r = results[name]
        print(f"{name}: trained {r['train_seconds']:.0f} s ({r['epochs']} epochs × "
              f"{r['slices_per_epoch']} slices), evaluate {r['evaluate_seconds']:.0f} s, "
              f"report-style mIoU {pct(r['report_style']['miou'])} %")  # fmt: skip


if __name__ == "__main__":
    main()
