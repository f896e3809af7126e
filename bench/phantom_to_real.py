"""How far does a model trained only on amoseg's phantoms get on real scans?

Trains `unet` (and `unet3d` when the registry has it) on synthetic phantoms twice — plain
contrast and `--randomise-intensity` (SynthSeg-style) — then segments every real labelled scan
beside the checkout (`../shared/realdata`: the two real AMOS slabs with manual labels, and the
example CT whose labels were made by a model, marked as such) with `amoseg predict` and scores
them with `amoseg score`, per organ; phantom test scans are scored the same way as a reference.

    nice -n 10 python bench/phantom_to_real.py                       # prints the tables
    nice -n 10 python bench/phantom_to_real.py --docs docs/benchmarks.md   # and writes them
    python bench/phantom_to_real.py --run 3d_lowres=RUN_DIR   # a finished run: real scans only

Mean organ Dice here = the mean over the organs present in that scan's ground truth of the 3D
Dice on the scan's own grid (an organ the model predicts but the truth lacks is not averaged).
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
REALDATA = REPO.parent / "shared" / "realdata"
MARK_START, MARK_END = "<!-- phantom_to_real:start -->", "<!-- phantom_to_real:end -->"

#: (name, image, label, who labelled it)
REAL_SCANS = (
    ("amos_0001", "amos_mini/imagesTr/amos_0001.nii.gz", "amos_mini/labelsTr/amos_0001.nii.gz",
     "manual"),
    ("amos_0013", "amos_mini/imagesVa/amos_0013.nii.gz", "amos_mini/labelsVa/amos_0013.nii.gz",
     "manual"),
    ("example_ct", "example_ct/ct.nii.gz", "example_ct/labels_amos_model.nii.gz", "model-made"),
)  # fmt: skip
VARIANTS = {"plain": False, "randomised": True}


def amoseg(*args: str) -> None:
    """Run the amoseg CLI as a user would (same interpreter, same environment)."""
    cmd = [sys.executable, "-m", "amoseg", *args]
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True)


def build(work: Path, variant: str, cases: int, size: int) -> Path:
    from amoseg.data.synth import generate_dataset
    from amoseg.store.prepare import prepare_dataset

    root, store = work / variant / "amos", work / variant / "store"
    if not (root / "dataset.json").exists():
        generate_dataset(
            root, cases, 0, "demo", progress=False, overwrite=root.exists(),
            randomise=VARIANTS[variant], workers=2,
        )  # fmt: skip
    if not (store / "store.json").exists():
        prepare_dataset(root, store, size=size, keep="organ", seed=0, progress=False)
    return root


def train_model(model: str, variant: str, store: Path, run: Path, args) -> dict:
    from amoseg.training import TrainSettings, train

    if (run / "summary.json").exists():  # trained by an earlier invocation: reuse it
        return json.loads((run / "summary.json").read_text())
    hparams: dict = {"base": args.base}
    if VARIANTS[variant]:
        # randomised contrast has no HU scale: per-image z-score, as for MR
        hparams |= {"norm": "zscore", "window": [-32768.0, 32767.0]}
    three_d = model == "unet3d"  # its epoch is 2 patches per training case, not slices
    settings = TrainSettings(
        epochs=args.epochs_3d if three_d else args.epochs, device="cpu", seed=0,
        hparams=hparams, max_slices_per_epoch=None if three_d else args.max_slices,
        progress=False,
    )  # fmt: skip
    start = time.perf_counter()
    summary = train(model, store, run, settings)
    summary["wall_seconds"] = time.perf_counter() - start
    return summary


def organ_dice(report: dict) -> tuple[dict[str, float], float]:
    """Per organ Dice (organs present in the truth) and their mean, from `amoseg score`."""
    case = report["per_case"][0]
    dice = {
        row["name"]: float(row["dice"] or 0.0)
        for row in case["per_class"]
        if row["id"] > 0 and row["gt_voxels"] > 0
    }
    return dice, (sum(dice.values()) / len(dice) if dice else float("nan"))


def score_run(run: Path, root: Path | None, out: Path) -> dict[str, dict]:
    """predict + score every real scan and (with `root`) the phantom test scans with the CLI."""
    from amoseg.atomic import read_json

    phantoms = []
    if root is not None:
        meta = read_json(root / "dataset.json")
        phantoms = [(Path(e["image"]).name[:-7], root / e["image"], root / e["label"], "phantom")
                    for e in meta["test"]]  # fmt: skip
    scans = [(n, REALDATA / i, REALDATA / g, who) for n, i, g, who in REAL_SCANS] + phantoms
    out.mkdir(parents=True, exist_ok=True)
    targets = [out / f"score_{name}.json" for name, *_ in scans]
    trained = (run / "checkpoint_best.pt").stat().st_mtime
    if not all(t.exists() and t.stat().st_mtime > trained for t in targets):
        amoseg("predict", str(run), *(str(s[1]) for s in scans), "-o", str(out / "pred"),
               "--device", "cpu")  # fmt: skip
    results = {}
    for name, image, label, who in scans:
        pred = out / "pred" / f"{image.name.split('.')[0]}_seg.nii.gz"
        target = out / f"score_{name}.json"
        if not (target.exists() and target.stat().st_mtime > trained):
            amoseg("score", str(pred), str(label), "--json", str(target))
        dice, mean = organ_dice(json.loads(target.read_text()))
        results[name] = {"labels": who, "mean_organ_dice": mean, "dice": dice}
    return results


def table(results: dict, summaries: dict, args, seconds: float) -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"Measured {dt.date.today().isoformat()} on a {os.cpu_count()}-core "
        f"{platform.machine()} CPU, shared with other jobs during the runs (1-min load "
        f"{load:.1f} when this table was written), `nice -n 10`, no GPU; train time per model "
        "in the table (this invocation: {:.0f} min, reusing finished runs).".format(seconds / 60),
        f"Training data: {args.cases} synthetic demo-preset CT phantoms (seed 0; plain, or "
        f"`--randomise-intensity`), prepared at {args.size}² (`seed` resize), 70/15/15 by scan. "
        f"Budget: `unet` {args.epochs} epochs × ≤ {args.max_slices} slices, batch 4; `unet3d` "
        f"(when run) {args.epochs_3d} epochs × 2 patches per training case, batch 2; base "
        f"{args.base} channels, CPU (plain: HU window; randomised: per-image z-score).",
        "",
        "Mean organ Dice (%) per scan — 3D Dice on the scan's own grid, averaged over the organs "
        "present in its labels; `amoseg predict` then `amoseg score`:",
        "",
    ]
    runs = list(results)
    lines.append("| scan | labels | " + " | ".join(runs) + " |")
    lines.append("|---|---|" + "---:|" * len(runs))
    scans = list(next(iter(results.values())))
    for scan in scans:
        who = next(iter(results.values()))[scan]["labels"]
        cells = [f"{100 * results[r][scan]['mean_organ_dice']:.1f}" for r in runs]
        lines.append(f"| {scan} | {who} | " + " | ".join(cells) + " |")
    lines.append(
        "| *train time (s)* | | "
        + " | ".join(f"{summaries[r].get('train_seconds', float('nan')):.0f}" for r in runs)
        + " |"
    )
    lines += ["", "Per organ Dice (%) on the real scans (— : organ not in that scan's labels):", ""]
    real = [s for s, *_ in REAL_SCANS]
    cols = [(r, s) for r in runs for s in real]
    lines.append("| organ | " + " | ".join(f"{r} · {s}" for r, s in cols) + " |")
    lines.append("|---|" + "---:|" * len(cols))
    from amoseg.labels import CLASS_NAMES

    for organ in CLASS_NAMES[1:]:
        cells = []
        for r, s in cols:
            d = results[r][s]["dice"].get(organ)
            cells.append("—" if d is None else f"{100 * d:.1f}")
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def given_table(results: dict) -> str:
    """`--run`: mean and per organ Dice (%) of finished runs on the real scans."""
    from amoseg.labels import CLASS_NAMES

    runs = list(results)
    real = [s for s, *_ in REAL_SCANS]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    means = [f"**{100 * results[r][s]['mean_organ_dice']:.1f}**" for r in runs for s in real]
    lines = [
        f"Scored {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on a {os.cpu_count()}-core "
        f"{platform.machine()} CPU (1-min load {load:.1f}); `amoseg predict` (no TTA) then "
        "`amoseg score`, Dice (%) on each scan's own grid (— : organ not in its labels).",
        "",
        "| organ | " + " | ".join(f"{r} · {s}" for r in runs for s in real) + " |",
        "|---|" + "---:|" * (len(runs) * len(real)),
        "| **mean (organs present)** | " + " | ".join(means) + " |",
    ]
    for organ in CLASS_NAMES[1:]:
        cells = []
        for r in runs:
            for s in real:
                d = results[r][s]["dice"].get(organ)
                cells.append("—" if d is None else f"{100 * d:.1f}")
        lines.append(f"| {organ} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_docs(path: Path, body: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    section = (
        f"{MARK_START}\n## Phantom-trained models on real scans (`bench/phantom_to_real.py`)\n\n"
        f"{body}\n{MARK_END}"
    )
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=24)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--max-slices", type=int, default=200)
    p.add_argument("--base", type=int, default=16)
    p.add_argument("--epochs-3d", type=int, default=30, help="unet3d: 2 patches per case each")
    p.add_argument("--work", type=Path, default=Path("/tmp/amoseg-phantom-to-real"))
    p.add_argument("--docs", type=Path, default=None, help="write the tables into this file")
    p.add_argument(
        "--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
        help="train/score only these (e.g. one per process); a later call with all of them "
        "reuses finished runs and scores and writes the table",
    )  # fmt: skip
    p.add_argument("--models", nargs="+", default=None, help="default: unet, + unet3d")
    p.add_argument(
        "--run", action="append", default=[], metavar="NAME=RUN_DIR",
        help="score finished runs (e.g. a bench/curves.py snapshot) on the real scans instead "
        "of training; prints their table (not written to --docs)",
    )  # fmt: skip
    args = p.parse_args()
    if not REALDATA.exists():
        sys.exit(f"no real samples at {REALDATA}: nothing to score against")
    if args.run:
        given = dict(item.split("=", 1) if "=" in item else (item, item) for item in args.run)
        results = {
            name: score_run(Path(run), None, args.work / f"given-{i}")
            for i, (name, run) in enumerate(given.items())
        }
        print(given_table(results))
        return

    import torch

    from amoseg.models.registry import model_names

    torch.set_num_threads(1)  # shared 2-core machine: one thread is faster under load
    models = args.models or ["unet"] + (["unet3d"] if "unet3d" in model_names() else [])
    start = time.perf_counter()
    results, summaries = {}, {}
    for variant in args.variants:
        root = build(args.work, variant, args.cases, args.size)
        for model in models:
            key = f"{model} · {variant}"
            run = args.work / variant / f"run-{model}"
            try:
                store = args.work / variant / "store"
                summaries[key] = train_model(model, variant, store, run, args)
                results[key] = score_run(run, root, args.work / variant / f"scores-{model}")
            except Exception as exc:  # a recipe still being built must not hide the others
                print(f"{key}: failed ({type(exc).__name__}: {exc})", file=sys.stderr)
                continue
            print(key, {s: round(100 * v["mean_organ_dice"], 1) for s, v in results[key].items()})
    body = table(results, summaries, args, time.perf_counter() - start)
    print(body)
    if args.docs is not None:
        write_docs(args.docs, body)


if __name__ == "__main__":
    main()
