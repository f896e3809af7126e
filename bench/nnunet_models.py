"""nnU-Net's own predictor against amoseg on the same nnU-Net v2 model folder and scans.

    python bench/nnunet_models.py --model MODEL_DIR --scans FOLDER --out OUT --threads 2
    python bench/nnunet_models.py --smoke --out /tmp/nnm-smoke      # tiny random-weight model

For each tool and with/without mirroring: one whole command (start-up and model loading
counted) over every scan in --scans (NIfTI files named <case>_0000.nii.gz, as nnU-Net wants
them): `nnUNetv2_predict_from_modelfolder` from `.venv-nnunet` (fp32 on the CPU, as nnU-Net
runs there) and `amoseg predict MODEL_DIR` (--precision fp32, the same --step-size and folds).
Both get --threads torch threads (OMP_NUM_THREADS, nnUNet_def_n_proc; nnU-Net with -npp 1
-nps 1). Peak RAM: the largest resident set of the command's processes (getrusage of the
children: nnU-Net's preprocessing/export workers are separate processes, so for nnU-Net this
undercounts the sum). Label agreement of amoseg's output with nnU-Net's is reported too.

--smoke makes a tiny model with nnU-Net's own planner and trainer (tests/nnunet_model_maker.py)
on 4 synthetic scans: seconds of work, for checking the script. Never run the full-size bench
beside other work (timings need an idle machine). TODO: TotalSegmentator's own CLI
(`TotalSegmentator --fast` in its own venv, reading a random-weight folder laid out as it
expects) as a third tool.

Writes OUT/nnunet_models.json and OUT/nnunet_models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(rc)"
)


def nnunet_venv() -> Path:
    venv = REPO / ".venv-nnunet"
    if (venv / "bin" / "nnUNetv2_predict_from_modelfolder").exists():
        return venv
    sys.exit("nnU-Net's environment .venv-nnunet is missing (bench/vs_nnunet.py creates it)")


def measured(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the largest child process) of one command."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1])
    return seconds, peak_kib / 1024


def made_model(out: Path, venv: Path, full: bool = False) -> tuple[Path, Path]:
    """A random-weight model folder and one test scan, made with nnU-Net's own planner and
    trainer: tiny (3d_fullres, 2 folds, a shrunk network, demo-preset phantoms) for --smoke;
    with `full`, nnU-Net's own 2d plan for 4 full-preset CT phantoms (512² slices), one fold."""
    sys.path.insert(0, str(REPO))
    from tests.nnunet_layout import to_nnunet

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    amos = out / "amos"
    preset = ["--preset", "full"] if full else []
    subprocess.run([sys.executable, "-m", "amoseg", "synth", str(amos), "--cases", "4", *preset],
                   check=True, env=env, capture_output=True)  # fmt: skip
    to_nnunet(amos, out / "nnUNet_raw" / "Dataset778_Bench")
    env.pop("PYTHONPATH")
    conf, folds = ("2d", "0") if full else ("3d_fullres", "0,1")
    subprocess.run([str(venv / "bin" / "python"), str(REPO / "tests" / "nnunet_model_maker.py"),
                    str(out), "778", conf, folds, *(["--full-size"] if full else [])],
                   check=True, env=env, capture_output=True)  # fmt: skip
    scans = out / "scans"
    scans.mkdir()
    image = next((amos / "imagesTs").glob("*.nii.gz"))
    (scans / "case_0000.nii.gz").write_bytes(image.read_bytes())
    model = out / "nnUNet_results" / "Dataset778_Bench" / f"nnUNetTrainer__nnUNetPlans__{conf}"
    return model, scans


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--scans", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", default=None, help="e.g. 0,1 (default: every fold)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--step-size", type=float, default=0.5)
    parser.add_argument("--no-mirroring-run", action="store_true", help="skip the TTA runs")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--full",
        action="store_true",
        help="make a full-size random-weight 2d model from full-preset phantoms (minutes)",
    )
    args = parser.parse_args(argv)
    venv = nnunet_venv()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.smoke or args.full:
        args.model, args.scans = made_model(args.out, venv, full=args.full)
    if args.model is None or args.scans is None:
        parser.error("--model and --scans are needed (or --smoke)")
    folds = args.folds.split(",") if args.folds else sorted(
        p.name.removeprefix("fold_") for p in args.model.glob("fold_*")
    )  # fmt: skip
    n_cases = len(list(args.scans.glob("*.nii.gz")))
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "nnUNet_def_n_proc": threads, "PYTHONPATH": str(REPO)}  # fmt: skip
    env.setdefault("nnUNet_raw", str(args.out))
    env.setdefault("nnUNet_preprocessed", str(args.out))
    env.setdefault("nnUNet_results", str(args.out))
    rows = []
    for mirror in [False] if args.no_mirroring_run else [False, True]:
        tag = "tta" if mirror else "plain"
        nn_out, am_out = args.out / f"nnunet_{tag}", args.out / f"amoseg_{tag}"
        nn_cmd = [
            str(venv / "bin" / "nnUNetv2_predict_from_modelfolder"), "-i", str(args.scans),
            "-o", str(nn_out), "-m", str(args.model), "-f", *folds,
            "-step_size", str(args.step_size), "-device", "cpu", "-npp", "1", "-nps", "1",
            "--disable_progress_bar", *([] if mirror else ["--disable_tta"]),
        ]  # fmt: skip
        am_cmd = [
            sys.executable, "-m", "amoseg", "predict", str(args.model), str(args.scans),
            "-o", str(am_out), "--device", "cpu", "--precision", "fp32", "--overwrite",
            "--step-size", str(args.step_size), "--tta" if mirror else "--no-tta",
        ]  # fmt: skip
        for tool, cmd in (("nnU-Net", nn_cmd), ("amoseg", am_cmd)):
            seconds, peak = measured(cmd, env, args.out / f"{tool}_{tag}.log")
            rows.append({"tool": tool, "mirroring": mirror, "seconds_per_case": seconds / n_cases,
                         "peak_rss_mib": peak})  # fmt: skip
        agree = []
        for seg in sorted(am_out.glob("*_seg.nii.gz")):
            # amoseg names case_0000.nii.gz's output case_seg.nii.gz; nnU-Net writes case.nii.gz
            case = seg.name.removesuffix("_seg.nii.gz").removesuffix("_0000")
            theirs = nn_out / f"{case}.nii.gz"
            if theirs.exists():
                a, b = (np.asanyarray(nib.load(p).dataobj) for p in (seg, theirs))
                agree.append(float((a == b).mean()))
        rows[-1]["label_agreement_with_nnunet"] = min(agree) if agree else None
    result = {
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
        "date": time.strftime("%Y-%m-%d"),
        "threads": args.threads,
        "model": str(args.model),
        "folds": folds,
        "cases": n_cases,
        "step_size": args.step_size,
        "rows": rows,
    }
    (args.out / "nnunet_models.json").write_text(json.dumps(result, indent=2))
    lines = ["| tool | mirroring | s / case (start-up incl.) | peak RSS MiB | labels = nnU-Net |",
             "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        agree = r.get("label_agreement_with_nnunet")
        lines.append(
            f"| {r['tool']} | {'yes' if r['mirroring'] else 'no'} | {r['seconds_per_case']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {'' if agree is None else f'{100 * agree:.3f} %'} |"
        )
    table = "\n".join(lines)
    (args.out / "nnunet_models.md").write_text(table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
