"""Seconds to predict the issue's 512×512×100 CT with amoseg's run folders of each planned
configuration (e.g. `3d_lowres`, `3d_cascade_fullres`) beside `nnUNetv2_predict` with an
nnU-Net `2d` model folder, in one run on the same idle machine.

    python bench/configuration_predict.py --run 3d_lowres=RUN_DIR \\
        [--run 3d_cascade_fullres=RUN_DIR ...] [--nnunet-model NNUNET_2D_DIR] --out OUT
    python bench/configuration_predict.py --smoke --out /tmp/cp-smoke   # checks the script

Every command is one whole process (start-up and model loading counted), without mirroring,
fp32 for nnU-Net (its CPU default) and amoseg's `--precision auto` (what a user gets), with
--threads torch threads for both (OMP_NUM_THREADS, MKL_NUM_THREADS, nnU-Net -npp 1 -nps 1).
amoseg's runs are timed --repeats times (the median is reported; nnU-Net once: it takes
minutes). Speed does not depend on the weights, so a random-weight nnU-Net folder is a fair
reference: without --nnunet-model one is made as bench/nnunet_models.py --full makes it
(nnU-Net's own 2d plan of 4 full-preset CT phantoms; minutes). The amoseg runs are the user's
(e.g. the snapshots bench/curves.py leaves in OUT/runs/amoseg-3d_lowres-marks/m20).

Goals (issue 25): `3d_lowres` ≤ 5 s and ≥ 25× faster than nnU-Net `2d`. Writes
OUT/configuration_predict.json and OUT/configuration_predict.md. Run it alone: a shared
2-core machine gives numbers worth nothing (the load averages are recorded beside each row).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import nnunet_models as nm  # noqa: E402
from predict import synthetic_ct  # noqa: E402

SHAPE = (512, 512, 100)
GOAL_SECONDS, GOAL_RATIO = 5.0, 25.0


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="NAME=RUN_DIR",
        help="an amoseg run folder (or package) and the name of its row, e.g. 3d_lowres=RUN",
    )
    p.add_argument("--nnunet-model", type=Path, help="nnU-Net 2d model folder (else made)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per amoseg model")
    p.add_argument("--smoke", action="store_true", help="tiny scan and models: checks only")
    args = p.parse_args(argv)
    runs = {}
    for item in args.run:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).exists():
            p.error(f"--run takes NAME=RUN_DIR with an existing folder, got {item!r}")
        runs[name] = Path(path)
    if not runs and not args.smoke:
        p.error("pass at least one --run NAME=RUN_DIR (e.g. 3d_lowres=runs/low)")
    if args.repeats < 1 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1")
    args.runs = runs
    return args


def smoke_run(out: Path) -> Path:
    """A 2-epoch `unet3d` run on a tiny 3d_lowres store of demo phantoms (checks only)."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    amos, store, run = out / "smoke_amos", out / "smoke_store", out / "smoke_run"
    steps = [
        ["synth", str(amos), "--cases", "4", "--preset", "demo"],
        ["plan", str(amos), "-o", str(out / "smoke_plan.json"), "--lowres-spacing", "8",
         "--quiet", "--overwrite"],
        ["prepare", str(amos), str(store), "--plan", str(out / "smoke_plan.json"),
         "--configuration", "3d_lowres", "--quiet"],
        ["train", "unet3d", "--data", str(store), "--out", str(run), "--epochs", "1",
         "--device", "cpu", "--workers", "0", "--hparams", '{"base": 4}'],
    ]  # fmt: skip
    if not (run / "checkpoint_best.pt").exists():
        for step in steps:
            subprocess.run([sys.executable, "-m", "amoseg", *step], check=True, env=env,
                           capture_output=True)  # fmt: skip
    return run


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    shape = (96, 96, 20) if args.smoke else SHAPE
    scans = out / "scans"
    scan = scans / "ct_0000.nii.gz"  # nnU-Net's input naming; amoseg writes ct_seg.nii.gz
    if not scan.exists():
        scans.mkdir(parents=True, exist_ok=True)
        synthetic_ct(scan, shape)
    venv = nm.nnunet_venv()
    runs = dict(args.runs)
    if args.smoke and not runs:
        runs["3d_lowres"] = smoke_run(out)
    model = args.nnunet_model
    if model is None:
        print("making a random-weight nnU-Net 2d model folder (minutes)", file=sys.stderr)
        model, _ = nm.made_model(out / "nnunet", venv, full=not args.smoke)
    env = nm.tool_env(args.threads, out)
    rows: list[dict[str, Any]] = []
    for name, run in runs.items():
        times = []
        for k in range(args.repeats):
            dest = out / f"amoseg_{name}"
            cmd = [sys.executable, "-m", "amoseg", "predict", str(run), str(scans), "-o",
                   str(dest), "--device", "cpu", "--no-tta", "--overwrite"]  # fmt: skip
            m = nm.measured(cmd, env, out / f"amoseg_{name}_{k}.log")
            inside = nm.amoseg_scan_seconds(m.pop("stdout"))
            times.append({**m, "in_pipeline_seconds": inside[0] if inside else None})
        rows.append(summary_row("amoseg", name, str(run), times))
    nn_out = out / "nnunet_2d"
    cmd = [str(venv / "bin" / "nnUNetv2_predict_from_modelfolder"), "-i", str(scans), "-o",
           str(nn_out), "-m", str(model), "-f", *nm.model_folds(model), "-step_size", "0.5",
           "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar",
           "--disable_tta"]  # fmt: skip
    m = nm.measured(cmd, env, out / "nnunet_2d.log")
    m.pop("stdout")
    rows.append(summary_row("nnU-Net", "2d", str(model), [m]))
    reference = rows[-1]["seconds"]
    for row in rows[:-1]:
        row["nnunet_2d_over_this"] = reference / row["seconds"]
    result = {
        "machine": nm.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "scan_shape": list(shape),
        "threads": args.threads,
        "smoke": args.smoke,
        "rows": rows,
    }
    (out / "configuration_predict.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "configuration_predict.md").write_text(markdown(result))
    print(markdown(result))
    return result


def summary_row(tool: str, name: str, source: str, times: list[dict[str, Any]]) -> dict:
    seconds = [t["seconds"] for t in times]
    inside = [t.get("in_pipeline_seconds") for t in times if t.get("in_pipeline_seconds")]
    return {
        "tool": tool,
        "configuration": name,
        "model": source,
        "seconds": statistics.median(seconds),
        "all_seconds": seconds,
        "in_pipeline_seconds": statistics.median(inside) if inside else None,
        "peak_rss_mib": max(t["peak_rss_mib"] for t in times),
        "load_before": times[0]["load_before"],
        "load_after": times[-1]["load_after"],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"{result['machine']}; {result['date']}; scan {'×'.join(map(str, result['scan_shape']))}"
        f" (synthetic CT); {result['threads']} threads; no mirroring; "
        "seconds = one whole process (start-up counted), median of the repeats"
        + (" — SMOKE: not numbers" if result["smoke"] else ""),
        "",
        "| tool | configuration | seconds | in pipeline | peak RSS MiB | nnU-Net 2d / this | goal "
        "| load before → after |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in result["rows"]:
        ratio = r.get("nnunet_2d_over_this")
        goal = ""
        if r["tool"] == "amoseg" and r["configuration"] == "3d_lowres":
            met = r["seconds"] <= GOAL_SECONDS and (ratio or 0) >= GOAL_RATIO
            goal = f"≤ {GOAL_SECONDS:g} s and ≥ {GOAL_RATIO:g}×: {'met' if met else 'missed'}"
        inside = "" if r["in_pipeline_seconds"] is None else f"{r['in_pipeline_seconds']:.1f}"
        lines.append(
            f"| {r['tool']} | {r['configuration']} | {r['seconds']:.1f} | {inside} "
            f"| {r['peak_rss_mib']:.0f} | {'' if ratio is None else f'{ratio:.1f}×'} | {goal} "
            f"| {r['load_before'][0]:.2f} → {r['load_after'][0]:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
