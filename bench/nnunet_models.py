"""nnU-Net's own predictor, TotalSegmentator's own CLI and amoseg on the same nnU-Net v2 model
folders and scans.

    python bench/nnunet_models.py --model MODEL_DIR --scans FOLDER --out OUT --threads 2
    python bench/nnunet_models.py --full --totalseg --out OUT     # both full-size sets (hours)
    python bench/nnunet_models.py --smoke --out /tmp/nnm-smoke    # tiny random-weight model
    python bench/nnunet_models.py --smoke --totalseg --out /tmp/nnm-ts-smoke   # tiny TS layout

Two sets of rows, each one model folder and the same scans for every tool:
- an nnU-Net model (--model, or made: --smoke tiny 3d_fullres, --full nnU-Net's own 2d plan
  of full-size CT phantoms): `nnUNetv2_predict_from_modelfolder` (.venv-nnunet) vs
  `amoseg predict MODEL_DIR`;
- with --totalseg, a random-weight folder laid out as TotalSegmentator 2.18.0 reads its
  `total --fast` model (3 mm, 117 classes, its own names and ids; bench/totalseg_model.py):
  `TotalSegmentator -i CT -o OUT.nii.gz --fast --ml -d cpu` (.venv-totalseg, made if missing,
  one command per scan, TOTALSEG_HOME_DIR pointing at the folder's home; fully offline) vs
  nnU-Net and amoseg on that same folder with TotalSegmentator's step size (0.8).
Arms: plain fp32 (nnU-Net runs fp32 on the CPU); mirroring (TTA: nnU-Net and amoseg, on the
axes the checkpoint allows; skip with --no-mirroring-run); bf16 (amoseg --precision bf16,
labels against nnU-Net's fp32; skip with --no-bf16-run). Every command is one whole process
(start-up and model loading counted), timed with `os.getloadavg()` before and after. Every
tool gets --threads torch threads (OMP_NUM_THREADS, MKL_NUM_THREADS, nnUNet_def_n_proc;
nnU-Net -npp 1 -nps 1; TotalSegmentator -nr 1 -ns 1, and, where --threads is below the core
count, its `torch.set_num_threads(cpu_count())` capped at --threads by a two-line wrapper).
Peak RAM: the largest resident set of the command's processes (getrusage of the children:
nnU-Net's and TotalSegmentator's workers are separate processes, so this undercounts their sum).

Labels % equal: every output mapped onto AMOS ids by class name (the folder's dataset.json
through amoseg.nnunet_models.names, as amoseg maps them), then compared voxel by voxel with
nnU-Net's plain fp32 output and TotalSegmentator's; "fg" counts only voxels where either side
is an AMOS organ. Time outside the network: amoseg prints each scan's in-pipeline seconds
(start-up = the rest), TotalSegmentator its resampling / nnU-Net / saving seconds; the network
itself is estimated for every row as tiles × folds × mirror passes × the seconds of one tile
forward timed here (fp32 or bf16 autocast), so "outside" = seconds per case - that estimate.

--smoke: seconds-to-minutes of work on tiny volumes, for checking the script, never for
numbers. Never run the full-size bench beside other work (timings need an idle machine).

Writes OUT/nnunet_models.json and OUT/nnunet_models.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import totalseg_model  # noqa: E402

MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(rc)"
)
# TotalSegmentator 2.18.0 sets torch.set_num_threads(multiprocessing.cpu_count()) on the CPU
# (nnunet.py, nnUNetv2_predict): capped here so that every tool gets the same threads
TS_CAPPED = (
    "import os, sys, torch; _set = torch.set_num_threads; "
    "torch.set_num_threads = lambda n: _set(min(n, int(os.environ['OMP_NUM_THREADS']))); "
    "from totalsegmentator.bin.TotalSegmentator import main; "
    "sys.argv = ['TotalSegmentator', *sys.argv[1:]]; main()"
)
TOTALSEG_PINS = ["torch==2.13.0", "totalsegmentator==2.18.0"]


def nnunet_venv() -> Path:
    venv = REPO / ".venv-nnunet"
    if (venv / "bin" / "nnUNetv2_predict_from_modelfolder").exists():
        return venv
    sys.exit("nnU-Net's environment .venv-nnunet is missing (bench/vs_nnunet.py creates it)")


def totalseg_venv() -> Path:
    """`.venv-totalseg` beside the repository, created once: TotalSegmentator 2.18.0 with our
    pinned CPU torch (an unpinned torch pulls a multi-GB CUDA build)."""
    venv = REPO / ".venv-totalseg"
    if not (venv / "bin" / "TotalSegmentator").exists():
        print(f"creating {venv} (TotalSegmentator 2.18.0, CPU torch; minutes)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
             "-c", str(REPO / "constraints.txt"), *TOTALSEG_PINS],
            check=True,
        )  # fmt: skip
    return venv


def imports_torchvision(venv: Path) -> bool:
    """Whether torchvision imports there: nnU-Net's lookup of a trainer subclass by name
    imports timm → torchvision (see bench/totalseg_model.py)."""
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import torchvision"], capture_output=True
    )
    return probe.returncode == 0


def measured(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Wall seconds, peak RSS MiB of the largest child process and the load averages around
    one command; its output kept in `log`."""
    before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE, *cmd], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    after = os.getloadavg()
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}; see {log}")
    peak_kib = int(proc.stderr.strip().splitlines()[-1])
    return {
        "seconds": seconds,
        "peak_rss_mib": peak_kib / 1024,
        "load_before": [round(x, 2) for x in before],
        "load_after": [round(x, 2) for x in after],
        "stdout": proc.stdout,
    }


def tool_env(threads: int, out: Path) -> dict[str, str]:
    """The environment every tool runs in: `threads` torch threads (OMP, MKL, nnU-Net's
    processes) and nnU-Net's folders pointing into `out` unless set."""
    n = str(threads)
    env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n,
           "nnUNet_def_n_proc": n, "PYTHONPATH": str(REPO)}  # fmt: skip
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env.setdefault(key, str(out))
    return env


def amoseg_scan_seconds(stdout: str) -> list[float]:
    """The per-scan seconds `amoseg predict` prints (`<out>/<case>_seg.nii.gz  12.3 s`):
    loading, the model's whole pipeline and writing, without start-up and model loading."""
    return [float(m) for m in re.findall(r"_seg\.nii\.gz\s+([0-9.]+) s$", stdout, re.M)]


def totalseg_stage_seconds(stdout: str) -> dict[str, float]:
    """TotalSegmentator's own timings (not printed with -q): resampling to 3 mm, nnU-Net
    (its model loading, preprocessing, network and export of the 3 mm labels), resampling
    back, saving."""
    names = {"Predicted": "nnunet", "Saved": "save"}
    out: dict[str, float] = {}
    resampled = [float(s) for s in re.findall(r"Resampled in ([0-9.]+)s", stdout)]
    if resampled:
        out["resample_in"] = resampled[0]
    if len(resampled) > 1:
        out["resample_back"] = resampled[1]
    for word, key in names.items():
        found = re.findall(rf"{word} in ([0-9.]+)s", stdout)
        if found:
            out[key] = float(found[0])
    return out


def amos_table(model: Path) -> np.ndarray:
    """model class id → AMOS id, by the names in the folder's dataset.json (amoseg's mapping)."""
    from amoseg.nnunet_models.names import amos_mapping, model_classes

    dataset = json.loads((model / "dataset.json").read_text())
    return np.asarray(amos_mapping(model_classes(dataset["labels"])), dtype=np.uint8)


def read_amos(path: Path, table: np.ndarray | None) -> np.ndarray:
    """A label map as AMOS ids (`table` maps a model's own ids; None: already AMOS)."""
    data = np.asarray(nib.load(str(path)).dataobj).astype(np.int64)
    return data.astype(np.uint8) if table is None else table[data]


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float | None]:
    """(share of voxels with the same AMOS id, the same share where either is an organ)."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    same = a == b
    fg = (a > 0) | (b > 0)
    return float(same.mean()), (float(same[fg].mean()) if fg.any() else None)


def case_names(scans: Path) -> list[str]:
    """nnU-Net input names <case>_0000.nii.gz → <case>."""
    return sorted(
        p.name.removesuffix(".nii.gz").removesuffix("_0000") for p in scans.glob("*.nii.gz")
    )


def outputs(tool: str, folder: Path, cases: list[str]) -> dict[str, Path]:
    """case → the label file `tool` wrote for it (amoseg: <case>_seg.nii.gz; nnU-Net and
    TotalSegmentator here: <case>.nii.gz)."""
    suffix = "_seg.nii.gz" if tool == "amoseg" else ".nii.gz"
    return {c: folder / f"{c}{suffix}" for c in cases if (folder / f"{c}{suffix}").exists()}


def compare_rows(rows: list[dict[str, Any]], table: np.ndarray, cases: list[str]) -> None:
    """Add label agreement with nnU-Net's plain fp32 output and TotalSegmentator's to every
    row of one model (the worst case over scans)."""
    refs = {}
    for ref_tool, ref_arm in (("nnU-Net", "fp32"), ("TotalSegmentator", "--fast")):
        ref = next((r for r in rows if r["tool"] == ref_tool and r["arm"] == ref_arm), None)
        if ref is not None:
            refs[ref_tool] = ref
    for row in rows:
        for ref_tool, ref in refs.items():
            # mirroring rows are compared with the mirroring reference where one exists
            twin = next((r for r in rows if r["tool"] == ref_tool and r["arm"] == row["arm"]), ref)
            if twin is row:
                continue
            mine = outputs(row["tool"], Path(row["out"]), cases)
            theirs = outputs(twin["tool"], Path(twin["out"]), cases)
            scores = [
                agreement(
                    read_amos(mine[c], None if row["tool"] == "amoseg" else table),
                    read_amos(theirs[c], table),
                )
                for c in cases
                if c in mine and c in theirs
            ]
            if scores:
                key = "nnunet" if ref_tool == "nnU-Net" else "totalseg"
                row[f"labels_equal_{key}"] = min(s[0] for s in scores)
                fg = [s[1] for s in scores if s[1] is not None]
                row[f"labels_equal_{key}_fg"] = min(fg) if fg else None
                row[f"labels_equal_{key}_arm"] = twin["arm"]


def network_estimate(
    model: Path, scans: Path, folds: list[str], threads: int, reps: int
) -> dict[str, Any]:
    """The network's share, estimated: the tiles nnU-Net's sliding window visits on each
    preprocessed scan (at every step size used) and the seconds of one tile forward, fp32
    and bf16 autocast, timed in this process with --threads threads."""
    import torch

    from amoseg.nnunet_models.backend import NnunetBackend
    from amoseg.nnunet_models.folder import read_model_folder
    from amoseg.nnunet_models.preprocess import Preprocessor

    torch.set_num_threads(threads)
    folder = read_model_folder(model, folds)
    backend = NnunetBackend(folder, torch.device("cpu"), "fp32")
    pre = Preprocessor(folder.plans, folder.configuration, folder.path / "plans.json")
    shapes = []
    for scan in sorted(scans.glob("*.nii.gz")):
        img = nib.load(str(scan))
        shapes.append(list(pre.forward(np.asarray(img.dataobj), img.affine)[0].shape[1:]))
    patch = backend.patch_size
    x = torch.randn(1, 1, *patch)
    tile_seconds = {}
    net = backend.nets[0].eval()
    with torch.no_grad():
        for precision in ("fp32", "bf16"):
            times = []
            for i in range(reps + 1):
                start = time.perf_counter()
                with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                    net(x)
                if i:  # the first is warm-up
                    times.append(time.perf_counter() - start)
            tile_seconds[precision] = float(np.median(times))
    return {
        "shapes": shapes,
        "patch": patch,
        "folds": len(backend.nets),
        "mirror_axes": list(backend.mirror_axes or []),
        "tile_seconds": tile_seconds,
    }


def tiles(shape: list[int], patch: list[int], step: float) -> int:
    """Tiles nnU-Net's sliding window visits (a 2d model: per slice of the first axis)."""
    from amoseg.ops.sliding import window_steps

    if len(patch) == 2:
        per_slice = int(np.prod([len(s) for s in window_steps(shape[1:], patch, step)]))
        return shape[0] * per_slice
    return int(np.prod([len(s) for s in window_steps(shape, patch, step)]))


def network_seconds(estimate: dict[str, Any], step: float, mirror: bool, bf16: bool) -> float:
    """Estimated network seconds per case for one row (2d tiles: one slice each, so the
    one-tile time is for one slice of the 2d patch)."""
    passes = 2 ** len(estimate["mirror_axes"]) if mirror else 1
    per_tile = estimate["tile_seconds"]["bf16" if bf16 else "fp32"]
    counts = [tiles(s, estimate["patch"], step) for s in estimate["shapes"]]
    return float(np.mean(counts)) * estimate["folds"] * passes * per_tile


def made_model(out: Path, venv: Path, full: bool = False) -> tuple[Path, Path]:
    """A random-weight model folder and one test scan, made with nnU-Net's own planner and
    trainer: tiny (3d_fullres, 2 folds, a shrunk network, demo-preset phantoms) for --smoke;
    with `full`, nnU-Net's own 2d plan for 4 full-preset CT phantoms (512² slices), one fold."""
    from tests.nnunet_layout import to_nnunet

    amos, scans = phantoms(out, full)
    to_nnunet(amos, out / "nnUNet_raw" / "Dataset778_Bench")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    conf, folds = ("2d", "0") if full else ("3d_fullres", "0,1")
    subprocess.run([str(venv / "bin" / "python"), str(REPO / "tests" / "nnunet_model_maker.py"),
                    str(out), "778", conf, folds, *(["--full-size"] if full else [])],
                   check=True, env=env, capture_output=True)  # fmt: skip
    model = out / "nnUNet_results" / "Dataset778_Bench" / f"nnUNetTrainer__nnUNetPlans__{conf}"
    return model, scans


def phantoms(out: Path, full: bool) -> tuple[Path, Path]:
    """The phantoms both model sets are made from and the held-out scan, one set per preset."""
    tag = "_full" if full else ""
    amos = synth(out / f"amos{tag}", full)
    return amos, test_scans(amos, out / f"scans{tag}")


def synth(amos: Path, full: bool) -> Path:
    """4 CT phantoms (demo preset, or full: 512² slices) in AMOS layout, made once."""
    if not (amos / "dataset.json").exists():
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        preset = ["--preset", "full"] if full else []
        subprocess.run([sys.executable, "-m", "amoseg", "synth", str(amos), "--cases", "4",
                        *preset], check=True, env=env, capture_output=True)  # fmt: skip
    return amos


def test_scans(amos: Path, scans: Path) -> Path:
    """One held-out phantom as scans/case_0000.nii.gz (nnU-Net's input naming)."""
    if not scans.exists():
        scans.mkdir(parents=True)
        image = sorted((amos / "imagesTs").glob("*.nii.gz"))[0]
        (scans / "case_0000.nii.gz").write_bytes(image.read_bytes())
    return scans


def made_totalseg_model(
    out: Path, nn_venv: Path, ts_venv: Path, full: bool
) -> tuple[Path, Path, str]:
    """TotalSegmentator's `total --fast` layout with random weights under OUT/totalseg_home
    (bench/totalseg_model.py), its class names read from the installed package; returns
    (TOTALSEG_HOME_DIR, test scans, the trainer name the checkpoint carries)."""
    home = out / "totalseg_home"
    work = out / "totalseg_work"
    folder = totalseg_model.model_dir(home)
    lookup = (
        None if imports_torchvision(ts_venv) and imports_torchvision(nn_venv) else "nnUNetTrainer"
    )
    amos, scans = phantoms(out, full)
    if not (folder / "fold_0" / "checkpoint_final.pth").exists():
        shutil.rmtree(work, ignore_errors=True)
        totalseg_model.write_raw_dataset(amos, work / "nnUNet_raw", totalseg_classes(ts_venv))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env.pop("PYTHONPATH", None)
        subprocess.run(
            [str(nn_venv / "bin" / "python"), str(REPO / "bench" / "totalseg_model.py"),
             str(work), str(home), "--mirror-axes", "0,1,2",
             *(["--full-size"] if full else []),
             *(["--checkpoint-trainer", lookup] if lookup else [])],
            check=True, env=env, capture_output=True,
        )  # fmt: skip
    return home, scans, lookup or totalseg_model.TRAINER


def totalseg_classes(ts_venv: Path) -> dict[int, str]:
    """class_map["total"] of the installed totalsegmentator package (id → name, 1-117)."""
    code = "import json; from totalsegmentator.map_to_binary import class_map; "
    code += "print(json.dumps(class_map['total']))"
    found = subprocess.run(
        [str(ts_venv / "bin" / "python"), "-c", code], check=True, capture_output=True, text=True
    )
    return {int(k): v for k, v in json.loads(found.stdout).items()}


def model_folds(model: Path) -> list[str]:
    """The fold names of an nnU-Net model folder (its fold_* folders), sorted."""
    return sorted(p.name.removeprefix("fold_") for p in model.glob("fold_*"))


def bench_folder(
    label: str,
    model: Path,
    scans: Path,
    out: Path,
    args: argparse.Namespace,
    step: float,
    nn_venv: Path,
    totalseg: tuple[Path, Path] | None = None,
) -> list[dict[str, Any]]:
    """Every tool and arm on one model folder; `totalseg`: (its venv, TOTALSEG_HOME_DIR)."""
    folds = args.folds.split(",") if args.folds else model_folds(model)
    cases = case_names(scans)
    slug = re.sub(r"\W+", "_", label)  # for file names
    env = tool_env(args.threads, out)
    rows: list[dict[str, Any]] = []

    def run(tool: str, arm: str, cmd: list[str], dest: Path, tool_env=env, **extra) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        m = measured(cmd, tool_env, out / f"{slug}_{tool}_{arm}.log")
        rows.append({"model": label, "tool": tool, "arm": arm, "out": str(dest),
                     "seconds_per_case": m["seconds"] / len(cases), **extra,
                     **{k: v for k, v in m.items() if k != "stdout"}})  # fmt: skip
        if tool == "amoseg":
            inside = amoseg_scan_seconds(m["stdout"])
            rows[-1]["in_pipeline_seconds_per_case"] = float(np.mean(inside)) if inside else None
            rows[-1]["startup_seconds"] = m["seconds"] - sum(inside) if inside else None

    arms = [("fp32", False)] + ([] if args.no_mirroring_run else [("tta", True)])
    for arm, mirror in arms:
        nn_out, am_out = out / f"{slug}_nnunet_{arm}", out / f"{slug}_amoseg_{arm}"
        run("nnU-Net", arm, [
            str(nn_venv / "bin" / "nnUNetv2_predict_from_modelfolder"), "-i", str(scans),
            "-o", str(nn_out), "-m", str(model), "-f", *folds, "-step_size", str(step),
            "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar",
            *([] if mirror else ["--disable_tta"]),
        ], nn_out, mirroring=mirror, precision="fp32")  # fmt: skip
        run("amoseg", arm, amoseg_cmd(model, scans, am_out, step, mirror, "fp32", folds),
            am_out, mirroring=mirror, precision="fp32")  # fmt: skip
    if not args.no_bf16_run:
        bf_out = out / f"{slug}_amoseg_bf16"
        run("amoseg", "bf16", amoseg_cmd(model, scans, bf_out, step, False, "bf16", folds),
            bf_out, mirroring=False, precision="bf16")  # fmt: skip
    if totalseg is not None:
        ts_venv, home = totalseg
        ts_out = out / f"{slug}_totalseg"
        ts_env = {k: v for k, v in env.items() if not k.startswith("nnUNet_") and k != "PYTHONPATH"}
        ts_env["TOTALSEG_HOME_DIR"] = str(home)
        capped = args.threads < (os.cpu_count() or 1)
        entry = [str(ts_venv / "bin" / "python"), "-c", TS_CAPPED] if capped else [
            str(ts_venv / "bin" / "TotalSegmentator")
        ]  # fmt: skip
        per_case = []
        for case in cases:
            # one command per scan: TotalSegmentator takes one image (start-up counted each)
            cmd = [*entry, "-i", str(scans / f"{case}_0000.nii.gz"), "-o",
                   str(ts_out / f"{case}.nii.gz"), "--fast", "--ml", "-d", "cpu",
                   "-nr", "1", "-ns", "1"]  # fmt: skip
            m = measured(cmd, ts_env, out / f"{slug}_totalseg_{case}.log")
            per_case.append(m)
        stages = [totalseg_stage_seconds(m["stdout"]) for m in per_case]
        rows.append({
            "model": label, "tool": "TotalSegmentator", "arm": "--fast", "out": str(ts_out),
            "mirroring": False, "precision": "fp32", "threads_capped": capped,
            "seconds_per_case": float(np.mean([m["seconds"] for m in per_case])),
            "peak_rss_mib": max(m["peak_rss_mib"] for m in per_case),
            "load_before": per_case[0]["load_before"], "load_after": per_case[-1]["load_after"],
            "stages_seconds_per_case": {k: float(np.mean([s.get(k, 0.0) for s in stages]))
                                        for k in sorted({k for s in stages for k in s})},
        })  # fmt: skip
    table = amos_table(model)
    compare_rows(rows, table, cases)
    if not args.no_network_estimate:
        est = network_estimate(model, scans, folds, args.threads, args.tile_reps)
        for row in rows:
            row_step = 0.8 if row["tool"] == "TotalSegmentator" else step
            net = network_seconds(est, row_step, row["mirroring"], row["precision"] == "bf16")
            row["network_seconds_per_case_est"] = net
            row["outside_network_seconds_per_case"] = row["seconds_per_case"] - net
        for row in rows:
            row["network_estimate"] = {k: v for k, v in est.items() if k != "shapes"}
            row["model_grid_shapes"] = est["shapes"]
    return rows


def amoseg_cmd(
    model: Path, scans: Path, out: Path, step: float, mirror: bool, precision: str, folds: list[str]
) -> list[str]:
    """`amoseg predict MODEL_DIR` on every scan (--folds are all of the folder's: amoseg reads
    every fold_*; the bench passes nnU-Net the same list)."""
    return [
        sys.executable, "-m", "amoseg", "predict", str(model), str(scans), "-o", str(out),
        "--device", "cpu", "--precision", precision, "--overwrite",
        "--step-size", str(step), "--tta" if mirror else "--no-tta",
    ]  # fmt: skip


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """speed = the reference's seconds / this row's (>1: faster); RAM = this row's peak / the
    reference's (<1: less). References, per model: nnU-Net with the same mirroring (its fp32
    plain run for bf16) and TotalSegmentator (rows without mirroring only: it never mirrors)."""
    for row in rows:
        same = [r for r in rows if r["model"] == row["model"]]
        arm = "tta" if row["mirroring"] else "fp32"
        nn = next((r for r in same if r["tool"] == "nnU-Net" and r["arm"] == arm), None)
        ts = next((r for r in same if r["tool"] == "TotalSegmentator"), None)
        for key, ref in (("nnunet", nn), ("totalseg", ts if not row["mirroring"] else None)):
            if ref is not None and ref is not row:
                row[f"speed_vs_{key}"] = ref["seconds_per_case"] / row["seconds_per_case"]
                row[f"ram_vs_{key}"] = row["peak_rss_mib"] / ref["peak_rss_mib"]


def pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.3f} %"


def equal(row: dict[str, Any], ref: str) -> str:
    """'99.500 % (98.000 %)': labels equal to `ref`'s, all voxels (organ voxels)."""
    if row.get(f"labels_equal_{ref}") is None:
        return ""
    return f"{pct(row[f'labels_equal_{ref}'])} ({pct(row.get(f'labels_equal_{ref}_fg'))})"


def ratio(value: float | None, unit: str) -> str:
    return "" if value is None else f"{value:.2f}{unit}"


def markdown(result: dict[str, Any]) -> str:
    """The table (and the facts the numbers depend on) as Markdown."""
    lines = [
        f"machine: {result['machine']}; date {result['date']}; threads {result['threads']}",
        "",
        "| model | tool | arm | s / case (start-up incl.) | peak RSS MiB | speed vs nnU-Net "
        "| speed vs TotalSeg | RAM vs nnU-Net | RAM vs TotalSeg | labels = nnU-Net (fg) "
        "| labels = TotalSeg (fg) | network s / case (est.) | outside network s | "
        "load before → after |",
        "|---" * 14 + "|",
    ]
    for r in result["rows"]:
        net = r.get("network_seconds_per_case_est")
        outside = r.get("outside_network_seconds_per_case")
        lines.append(
            f"| {r['model']} | {r['tool']} | {r['arm']} | {r['seconds_per_case']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {ratio(r.get('speed_vs_nnunet'), '×')} "
            f"| {ratio(r.get('speed_vs_totalseg'), '×')} | {ratio(r.get('ram_vs_nnunet'), '')} "
            f"| {ratio(r.get('ram_vs_totalseg'), '')} "
            f"| {equal(r, 'nnunet')} | {equal(r, 'totalseg')} "
            f"| {'' if net is None else f'{net:.1f}'} "
            f"| {'' if outside is None else f'{outside:.1f}'} "
            f"| {r['load_before'][0]:.2f} → {r['load_after'][0]:.2f} |"
        )
    notes = [""]
    for r in result["rows"]:
        if r.get("startup_seconds") is not None:
            notes.append(
                f"- {r['model']} amoseg {r['arm']}: start-up and model loading "
                f"{r['startup_seconds']:.1f} s, in-pipeline {r['in_pipeline_seconds_per_case']:.1f}"
                " s per case"
            )
        if r.get("stages_seconds_per_case"):
            parts = ", ".join(f"{k} {v:.1f} s" for k, v in r["stages_seconds_per_case"].items())
            notes.append(f"- {r['model']} TotalSegmentator stages per case: {parts}")
    return "\n".join(lines + notes) + "\n"


def machine() -> str:
    flags = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())  # type: ignore[union-attr]
        name = re.search(r"^model name\s*:\s*(.*)$", text, re.M).group(1)  # type: ignore[union-attr]
    except (OSError, AttributeError):
        name = platform.processor() or platform.machine()
    bf16 = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return (
        f"{platform.node()}, {name}, {os.cpu_count()} cores, "
        f"bf16: {', '.join(bf16) if bf16 else 'none (emulated)'}"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--scans", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", default=None, help="e.g. 0,1 (default: every fold)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--step-size", type=float, default=0.5)
    parser.add_argument("--no-mirroring-run", action="store_true", help="skip the TTA runs")
    parser.add_argument("--no-bf16-run", action="store_true", help="skip amoseg's bf16 run")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--full",
        action="store_true",
        help="make a full-size random-weight 2d model from full-preset phantoms (minutes)",
    )
    parser.add_argument(
        "--totalseg",
        action="store_true",
        help="also TotalSegmentator's CLI vs nnU-Net and amoseg on a random-weight folder laid "
        "out as its `total --fast` model (tiny with --smoke; with --smoke alone, only this set)",
    )
    parser.add_argument(
        "--totalseg-home",
        type=Path,
        help="a TOTALSEG_HOME_DIR that already holds the `total --fast` folder (default: made)",
    )
    parser.add_argument("--totalseg-step-size", type=float, default=0.8, help="TotalSegmentator's")
    parser.add_argument("--no-network-estimate", action="store_true")
    parser.add_argument("--tile-reps", type=int, default=3, help="timed tile forwards")
    args = parser.parse_args(argv)
    nn_venv = nnunet_venv()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    if args.model is None and (args.full or (args.smoke and not args.totalseg)):
        args.model, made_scans = made_model(args.out, nn_venv, full=args.full)
        args.scans = args.scans or made_scans
    if args.model is not None:
        if args.scans is None:
            parser.error("--model needs --scans")
        rows += bench_folder(
            args.model.parent.name, args.model, args.scans, args.out, args, args.step_size, nn_venv
        )
        info["model"] = str(args.model)
    elif not args.totalseg:
        parser.error("--model and --scans are needed (or --smoke, --full, --totalseg)")
    if args.totalseg:
        ts_venv = totalseg_venv()
        scans = args.scans
        if args.totalseg_home is not None:
            home, trainer = args.totalseg_home, "as found"
            if scans is None:
                parser.error("--totalseg-home needs --scans")
        else:
            home, made, trainer = made_totalseg_model(args.out, nn_venv, ts_venv, not args.smoke)
            scans = scans or made
        folder = totalseg_model.model_dir(home)
        rows += bench_folder(
            "TotalSegmentator total 3mm", folder, scans, args.out, args,
            args.totalseg_step_size, nn_venv, (ts_venv, home),
        )  # fmt: skip
        info["totalseg_model"] = str(folder)
        info["totalseg_checkpoint_trainer_name"] = trainer
        info["totalseg_mirror_axes_note"] = (
            "the random checkpoint stores mirroring axes (0, 1, 2) for the TTA arm; "
            "TotalSegmentator's real NoMirroring checkpoint stores none (TTA is a no-op there)"
        )
    add_ratios(rows)
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "threads": args.threads,
        "step_size": args.step_size,
        "smoke": args.smoke,
        **info,
        "rows": rows,
    }
    (args.out / "nnunet_models.json").write_text(json.dumps(result, indent=2))
    table = markdown(result)
    (args.out / "nnunet_models.md").write_text(table)
    print(table)
    return result


if __name__ == "__main__":
    main()
