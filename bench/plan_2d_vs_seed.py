"""Same wall-clock, same machine, same test scans: which recipe gives more quality per compute?

Each arm is MODEL:CONFIGURATION. The default answers issue 14's question, does nnU-Net-style
planning pay (`unet` on the planned `2d` configuration vs the report's `seed` configuration,
every slice resized to S×S); `--arms unet:2d,unet3d:3d` answers issue 15's (the 2D recipe vs
the 3D one); all three arms in one run answer both. Every arm is scored by the native-grid
evaluate (3D Dice and NSD per organ on each test scan's original grid, all slices: what
`amoseg predict` + `amoseg score` report).

    nice -n 10 python bench/plan_2d_vs_seed.py --data /work/data/synth-full-30 \\
        --work /work/scratch/bench-plan --minutes 8 --arms unet:seed,unet:2d,unet3d:3d

Steps: `amoseg plan` → `amoseg prepare --configuration NAME` per configuration (same split
seed, so the same test scans; checked) → per arm, a one-epoch probe measures seconds per
training sample (slice or patch) and per validation pass, then the model trains `--epochs`
epochs whose sample cap fills `--minutes` of training steps (each epoch's validation pass is
timed and reported, not counted) → `evaluate_run` (native +
report-style). Prints a Markdown table per organ and the means, and writes WORK/results.json.
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

ARMS = "unet:2d,unet:seed"


def parse_arms(text: str) -> list[tuple[str, str]]:
    arms = [tuple(a.split(":", 1)) for a in text.split(",") if a]
    if not arms or any(len(a) != 2 or not all(a) for a in arms):
        raise SystemExit(f"--arms must be MODEL:CONFIGURATION,..., got {text!r}")
    return arms  # type: ignore[return-value]


def parse_samples(text: str) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in (a.split("=", 1) for a in text.split(",") if a)}
    except ValueError:
        raise SystemExit(f"--samples must be MODEL:CONFIGURATION=N,..., got {text!r}") from None


def arm_name(arm: tuple[str, str]) -> str:
    return f"{arm[0]}-{arm[1]}"


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


def settings(epochs: int, slices: int | None, common: dict) -> object:
    """TrainSettings of a run; `common` (hparams, val_cases) is the same for every arm."""
    from amoseg.training import TrainSettings

    return TrainSettings(
        epochs=epochs, device="cpu", seed=0, num_workers=0, progress=False,
        max_slices_per_epoch=slices, **common,
    )  # fmt: skip


def probe(store: Path, work: Path, arm: tuple[str, str], slices: int, common: dict) -> tuple:
    """(seconds per training sample, seconds per validation pass) from a one-epoch run (its
    log.csv times the epoch and the validation pass within it)."""
    from amoseg.training import train

    run = work / f"probe-{arm_name(arm)}"
    if not (run / "summary.json").exists():
        train(arm[0], store, run, settings(1, slices, common))
    rows = log_rows(run)
    return max(1e-3, step_seconds(rows) / slices), float(rows[0]["val_seconds"])


def log_rows(run: Path) -> list[dict]:
    import csv

    with (run / "log.csv").open() as f:
        return list(csv.DictReader(f))


def step_seconds(rows: list[dict]) -> float:
    """Seconds a run's training steps really took (its log.csv rows): epochs minus validation."""
    return round(sum(float(r["seconds"]) - float(r["val_seconds"]) for r in rows), 1)


def evaluated(run: Path, store: Path) -> tuple[dict, float]:
    """evaluate_run on the test split, once: a rerun that adds arms reuses the scores."""
    from amoseg.reports.evaluate import evaluate_run

    done = run / "bench_evaluate.json"
    if done.exists():
        saved = json.loads(done.read_text())
        return saved["metrics"], saved["seconds"]
    start = time.perf_counter()
    metrics = evaluate_run(run, store, "test", device="cpu", progress=False)
    seconds = round(time.perf_counter() - start, 1)
    done.write_text(json.dumps({"metrics": metrics, "seconds": seconds}, default=float))
    return metrics, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="AMOS-format root (synthetic)")
    p.add_argument("--work", type=Path, required=True, help="scratch folder (stores, runs)")
    p.add_argument("--minutes", type=float, default=8.0, help="training budget per model")
    p.add_argument("--epochs", type=int, default=2, help="epochs the budget is split into")
    p.add_argument("--probe-slices", type=int, default=24)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--hparams", default="{}", help="hyper-parameters (JSON) for every arm")
    p.add_argument("--val-cases", type=int, default=1,
                   help="validation cases per epoch (test scores use every test scan)")  # fmt: skip
    p.add_argument("--arms", default=ARMS, help="MODEL:CONFIGURATION,... (default %(default)s)")
    p.add_argument("--samples", default="",
                   help="MODEL:CONFIGURATION=N,...: train those arms on N samples per epoch "
                   "instead of the probe's estimate (e.g. to match the seconds another arm's "
                   "training steps really took, from its log.csv)")  # fmt: skip
    args = p.parse_args()

    import torch

    from amoseg.store.slice_store import SliceStore
    from amoseg.training import train

    torch.set_num_threads(args.threads)
    hparams = json.loads(args.hparams)
    arms = parse_arms(args.arms)
    fixed = parse_samples(args.samples)
    common = {"hparams": hparams, "val_cases": args.val_cases}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    if not (work / "plan.json").exists():
        amoseg("plan", str(args.data), "-o", str(work / "plan.json"))
    configurations = sorted({c for _, c in arms})
    stores = {name: prepare(args.data, work, name) for name in configurations}
    tests = {name: SliceStore(s).cases("test") for name, s in stores.items()}
    if len({tuple(t) for t in tests.values()}) != 1:
        raise SystemExit(f"the stores' test splits differ: {tests}")

    budget = 60.0 * args.minutes
    results: dict[str, dict] = {}
    for arm in arms:
        model, config = arm
        name = arm_name(arm)
        per_slice, val_s = probe(stores[config], work, arm, args.probe_slices, common)
        # the budget is training steps; validation passes (one per epoch) are not counted: on
        # a CPU one pass over the full validation volumes can cost as much as the budget
        slices = fixed.get(f"{model}:{config}") or max(4, int(budget / args.epochs / per_slice))
        run = work / name
        if not (run / "summary.json").exists():
            print(f"[{name}] {per_slice:.2f} s/sample, validation {val_s:.0f} s → "
                  f"{args.epochs} epochs × {slices} samples", flush=True)  # fmt: skip
            train(model, stores[config], run, settings(args.epochs, slices, common))
        # a run finished by an earlier invocation keeps the cap it was trained with
        slices = json.loads((run / "config.json").read_text())["settings"]["max_slices_per_epoch"]
        summary = json.loads((run / "summary.json").read_text())
        metrics, evaluate_s = evaluated(run, stores[config])
        results[name] = {
            "model": model,
            "configuration": config,
            "probe_seconds_per_sample": round(per_slice, 3),
            "probe_validation_seconds": round(val_s, 1),
            "train_seconds": summary["train_seconds"],
            "step_seconds": step_seconds(log_rows(run)),
            "samples_fixed": f"{model}:{config}" in fixed,
            "epochs": args.epochs,
            "slices_per_epoch": slices,
            "evaluate_seconds": evaluate_s,
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
        "test_cases": tests[configurations[0]],
        "budget_minutes": args.minutes,
        "results": results,
    }
    (work / "results.json").write_text(json.dumps(out, indent=2))

    names = list(results)
    print(f"\n{started}; {machine}; data {args.data}; "
          f"test scans: {', '.join(out['test_cases'])}\n")  # fmt: skip

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{100 * x:.1f}"

    print("| organ | " + " | ".join(f"{n} Dice %" for n in names) + " | "
          + " | ".join(f"{n} NSD %" for n in names) + " |")  # fmt: skip
    print("|---|" + "---:|" * (2 * len(names)))
    for organ in results[names[0]]["native"]["per_organ"]:
        rows = [results[n]["native"]["per_organ"][organ] for n in names]
        print(f"| {organ} | " + " | ".join(pct(r["dice"]) for r in rows) + " | "
              + " | ".join(pct(r["nsd"]) for r in rows) + " |")  # fmt: skip
    means = [results[n]["native"] for n in names]
    print("| **mean** | " + " | ".join(f"**{pct(m['mean_dice'])}**" for m in means) + " | "
          + " | ".join(f"**{pct(m['mean_nsd'])}**" for m in means) + " |")  # fmt: skip
    for name in names:
        r = results[name]
        print(f"{name}: trained {r['train_seconds']:.0f} s, steps {r['step_seconds']:.0f} s "
              f"({r['epochs']} epochs × "
              f"{r['slices_per_epoch']} samples; probe {r['probe_seconds_per_sample']:.2f} "
              f"s/sample, validation pass {r['probe_validation_seconds']:.0f} s), evaluate "
              f"{r['evaluate_seconds']:.0f} s, report-style mIoU "
              f"{pct(r['report_style']['miou'])} %")  # fmt: skip


if __name__ == "__main__":
    main()
