"""amoseg against nnU-Net v2 on the same scans, the same budget and the same scorer.

    python bench/vs_nnunet.py --out runs/vs-nnunet                       # 20 synthetic cases
    python bench/vs_nnunet.py --root /data/amos22 --cases 40 --budget-min 30 --device cuda
    python bench/vs_nnunet.py --smoke --out /tmp/vs-smoke                # minutes, checks itself

What it does, all under --out (nothing else is written except the virtual environment and a
short-lived temp folder in the system's temp dir, removed at exit: nnU-Net's worker sockets
live in TMPDIR, and a Unix socket path must stay under 108 bytes, which a deep --out breaks):

1. nnU-Net's environment: `.venv-nnunet` beside this repository, created once with
   `nnunetv2==2.8.1` and torch pinned to our CPU wheel (`-c constraints.txt torch==2.13.0`) and
   reused afterwards. nnU-Net is not an amoseg dependency; amoseg's own `.venv` runs this script.
2. Data: `amoseg synth OUT/amos --preset demo` unless --root names an AMOS-format folder (then
   its first --cases labelled scans). `amoseg prepare` splits them by scan (70/15/15, seed 0);
   the same train/val/test cases are used by every tool.
3. nnU-Net raw format, written by this script (it does not need `amoseg prepare`'s nnU-Net
   reader): `OUT/nnunet/nnUNet_raw/Dataset501_AmosegBench/{imagesTr/<case>_0000.nii.gz,
   labelsTr/<case>.nii.gz, dataset.json}` holding train + val cases, `imagesTs/` the test images;
   `splits_final.json` puts amoseg's train cases in fold 0's training set and its val cases in
   fold 0's validation set. `nnUNet_raw`, `nnUNet_preprocessed` and `nnUNet_results` point into
   OUT/nnunet.
4. nnU-Net: `nnUNetv2_plan_and_preprocess -c 2d 3d_fullres`, then for each configuration
   `nnUNetv2_train 501 CONF 0 -tr nnUNetTrainer_AmosegBudget` and `nnUNetv2_predict` with and
   without `--disable_tta` (mirroring). **The budget**: bench/nnunet_budget_trainer.py is
   copied into the venv's trainer search path
   (`nnunetv2/training/nnUNetTrainer/nnUNetTrainer_AmosegBudget.py`); it is nnU-Net's
   default trainer with at most --nnunet-iters iterations per epoch (nnU-Net: 250; the first
   epoch stops its iterations at budget / 8 and later epochs repeat that count) and 2
   validation iterations (nnU-Net: 50), the epoch count set after the first epoch to
   floor(budget / first epoch's seconds) with the poly learning-rate schedule stretched to it,
   the workers' warm-up not counted, a stop before an epoch that would overrun the budget,
   and nnU-Net's fold validation skipped (see that file). Mirroring predictions run last, on
   the first --mirroring-cases test cases.
5. amoseg: `unet` (and the 3D recipe `unet3d` when the registry has it). A two-epoch
   calibration run (not counted) measures a warm epoch's seconds (its second: the first pays
   the cold page cache and start-up, as nnU-Net's warm-up above); then `amoseg train --epochs
   floor(budget / epoch seconds)` (or one shortened epoch with --max-slices when a whole
   epoch does not fit), stopped with SIGINT should it overrun; `amoseg predict` on the test
   images. amoseg has no test-time mirroring.
6. Scoring: every prediction folder with `amoseg score` (on the scans' own grids, NSD at
   2 mm). Once per run, `nnUNetv2_evaluate_folder` scores the nnU-Net 2d predictions too and the
   per-organ Dice of both scorers is compared (printed and stored as `scorer_check`).

Training seconds are each tool's own training-loop time (epochs incl. their validation; start-
up, planning and preprocessing excluded and listed separately). Predict seconds per case are a
whole `predict` command's wall time (start-up and model loading included) divided by the number
of test cases. Peak RAM is the sum of PSS over the command's processes, sampled every second;
peak GPU memory sums nvidia-smi's per-process figures for them.

Both tools run with --threads torch threads (nnU-Net's own CPU default, all cores, is capped
by a launcher). --shrink halves the synthetic scans in-plane (CPU-sized); --resume reuses every
finished step of an interrupted run (a step is done when logs/<step>.json exists).

Writes OUT/vs_nnunet.json and OUT/vs_nnunet.md (the printed table).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from amoseg.errors import AmosegError  # noqa: E402

NNUNET_VERSION = "2.8.1"
TORCH_PIN = "torch==2.13.0"
VENV = REPO / ".venv-nnunet"
DATASET_ID = 501
DATASET_NAME = f"Dataset{DATASET_ID}_AmosegBench"
TRAINER = "nnUNetTrainer_AmosegBudget"
TRAINER_SOURCE = Path(__file__).resolve().with_name("nnunet_budget_trainer.py")
MARKER = "vs_nnunet.json"
NNUNET_CONFIGS = ("2d", "3d_fullres")
AMOSEG_MODELS = ("unet", "unet3d")
NSD_TOLERANCE_MM = 2.0


@dataclass(frozen=True)
class Plan:
    """What one benchmark run does (from the command line)."""

    out: Path
    root: Path | None
    cases: int
    budget_s: float
    device: str
    threads: int
    size: int
    nnunet_iters: int
    nnunet_val_iters: int
    max_slices: int | None
    mirroring_cases: int | None
    shrink: bool
    amoseg_models: tuple[str, ...]
    nnunet_epochs: int
    smoke: bool


@dataclass
class Row:
    """One trained model's figures."""

    tool: str
    configuration: str
    train_s: float | None = None
    train_wall_s: float | None = None
    epochs: int | None = None
    predict_s_per_case: float | None = None
    predict_s_per_case_mirroring: float | None = None
    peak_ram_mib: float | None = None
    peak_gpu_mib: float | None = None
    mean_dice: float | None = None
    mean_nsd: float | None = None
    mean_dice_mirroring: float | None = None
    per_organ_dice: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- running commands and measuring them ---------------------------------------------------


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process (shared pages split between their users)."""
    for name, key in (("smaps_rollup", "Pss:"), ("status", "VmRSS:")):
        try:
            for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1])
        except (OSError, ValueError):
            continue
    return 0


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:  # fields[2] is the process group
                pids.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return pids


def _gpu_mib_by_pid() -> dict[int, float]:
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    usage = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit():
            with contextlib.suppress(ValueError):
                usage[int(parts[0])] = float(parts[1])
    return usage


@dataclass
class Measured:
    seconds: float
    peak_ram_mib: float
    peak_gpu_mib: float | None


def run_measured(
    cmd: list[str],
    env: dict[str, str],
    log_file: Path,
    *,
    gpu: bool = False,
    stop_after_s: float | None = None,
    what: str = "",
    fresh: Path | None = None,
) -> Measured:
    """Run `cmd` in its own process group; peak PSS of the group, wall seconds, log to file.

    A finished step leaves LOG.json beside its log; a --resume run reuses it instead of
    running the command again. `fresh`: a folder the step writes, removed before it runs
    (what an interrupted attempt left). `stop_after_s`: send SIGINT to the group after that
    many seconds (a training budget guard); the command then counts as finished, not failed.
    """
    done_file = log_file.with_suffix(".json")
    if done_file.exists():
        return Measured(**json.loads(done_file.read_text()))
    if fresh is not None and fresh.exists():
        shutil.rmtree(fresh)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    peak = {"ram": 0, "gpu": 0.0}
    with open(log_file, "w") as out:
        out.write("+ " + " ".join(cmd) + "\n")
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        done = threading.Event()
        stopped: dict[str, float | None] = {"by_budget": None}

        def sample() -> None:
            while not done.wait(1.0):
                pids = _group_pids(proc.pid)
                peak["ram"] = max(peak["ram"], sum(_pss_kib(p) for p in pids))
                if gpu:
                    usage = _gpu_mib_by_pid()
                    peak["gpu"] = max(peak["gpu"], sum(usage.get(p, 0.0) for p in pids))
                overrun = stop_after_s is not None and time.perf_counter() - start > stop_after_s
                if overrun and stopped["by_budget"] is None:
                    stopped["by_budget"] = time.perf_counter()
                    os.killpg(proc.pid, signal.SIGINT)
                elif overrun and time.perf_counter() - stopped["by_budget"] > 20:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)  # checkpoints are written atomically

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            stop_group(proc)
            raise
        finally:
            done.set()
            sampler.join()
        seconds = time.perf_counter() - start
    if rc != 0 and stopped["by_budget"] is None:
        tail = " | ".join(log_file.read_text(errors="replace").strip().splitlines()[-3:])
        raise AmosegError(f"{what or cmd[0]} failed (exit {rc}): {tail[-300:]}", log_file)
    measured = Measured(seconds, peak["ram"] / 1024, peak["gpu"] if gpu else None)
    done_file.write_text(json.dumps(measured.__dict__))
    return measured


def stop_group(proc: subprocess.Popen) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to the command's process group (nnU-Net's worker
    pools can outlive a SIGINT)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def amoseg_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "amoseg", *args]


# nnU-Net's CPU entry points call torch.set_num_threads(cpu_count()); this runs the same
# console-script entry point with that call capped at --threads, so both tools use as many.
NNUNET_LAUNCHER = """
import os, sys, torch
from importlib.metadata import entry_points
cap = int(os.environ["AMOSEG_BENCH_THREADS"])
set_threads = torch.set_num_threads
torch.set_num_threads = lambda n: set_threads(min(int(n), cap))
set_threads(cap)
sys.argv = sys.argv[1:]
(entry,) = entry_points(group="console_scripts", name=sys.argv[0])
sys.exit(entry.load()())
"""


def nnunet_cmd(name: str, *args: str) -> list[str]:
    """nnU-Net's console script `name`, in its venv, torch threads capped (NNUNET_LAUNCHER)."""
    return [str(VENV / "bin" / "python"), "-c", NNUNET_LAUNCHER, name, *args]


# --- nnU-Net's environment -----------------------------------------------------------------


def ensure_nnunet_venv() -> None:
    """Create .venv-nnunet once (nnunetv2 + our pinned CPU torch), then reuse it."""
    python = VENV / "bin" / "python"
    probe = "import nnunetv2, importlib.metadata as m; print(m.version('nnunetv2'))"
    if python.exists():
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == NNUNET_VERSION:
            log(f"reusing {VENV.name} (nnunetv2 {NNUNET_VERSION})")
            install_trainer()
            return
        raise AmosegError(
            f"{VENV.name} exists but has no nnunetv2 {NNUNET_VERSION}",
            VENV,
            "delete it and rerun to rebuild it",
        )
    log(f"creating {VENV.name}: nnunetv2=={NNUNET_VERSION} with {TORCH_PIN} (a few minutes)")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [
                str(VENV / "bin" / "python"),
                *("-m", "pip", "install", "--disable-pip-version-check", "-q"),
                *("-c", str(REPO / "constraints.txt"), TORCH_PIN, f"nnunetv2=={NNUNET_VERSION}"),
            ],
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(VENV, ignore_errors=True)  # ours, half-built: never leave it to be reused
        raise AmosegError(
            "could not install nnU-Net into its virtual environment",
            VENV,
            "see pip's message above; the benchmark needs network or a wheel mirror",
        ) from exc
    install_trainer()


def install_trainer() -> None:
    """Put the budget trainer where nnUNetv2_train -tr and nnUNetv2_predict -tr look for it."""
    python = VENV / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Top level of the search folder: nnU-Net looks at its modules before descending into
    # sub-packages, and descending imports primus → timm → torchvision, a CUDA build that
    # cannot load next to the CPU torch (docs/benchmarks.md).
    target = Path(where) / "training" / "nnUNetTrainer" / f"{TRAINER}.py"
    if not target.exists() or target.read_bytes() != TRAINER_SOURCE.read_bytes():
        shutil.copyfile(TRAINER_SOURCE, target)


# --- data: AMOS-format root → amoseg store + nnU-Net raw dataset --------------------------


def write_dataset(plan: Plan, work: Path, env: dict[str, str]) -> dict[str, Any]:
    """Synthesise (or select) the cases, split them with `amoseg prepare`, convert for nnU-Net."""
    from amoseg.data.datasets import find_cases

    if plan.root is None:
        root = work / "amos"
        log(f"amoseg synth: {plan.cases} demo-preset cases → {root}")
        run_measured(
            amoseg_cmd("synth", str(root), "--cases", str(plan.cases), "--preset", "demo"),
            env,
            work / "logs" / "synth.log",
            what="amoseg synth",
            fresh=root,
        )
        if plan.shrink:
            shrink_scans(root, 16 if plan.smoke else None)
    else:
        cases = find_cases(plan.root)[: plan.cases]
        if len(cases) < 4:
            raise AmosegError(
                f"need at least 4 labelled cases, found {len(cases)}",
                plan.root,
                "pass an AMOS-format folder with more scans or raise --cases",
            )
        root = work / "amos"
        if not (root / "dataset.json").exists():
            select_cases(cases, root)
    store = work / "store"
    log(f"amoseg prepare: split by scan, {plan.size}² slices → {store}")
    prep = run_measured(
        amoseg_cmd("prepare", str(root), str(store), "--size", str(plan.size), "--quiet"),
        env,
        work / "logs" / "prepare.log",
        what="amoseg prepare",
        fresh=store,
    )
    splits = json.loads((store / "splits.json").read_text())
    by_id = {c.case_id: c for c in find_cases(root)}
    for name in ("train", "val", "test"):
        if not splits.get(name):
            raise AmosegError(
                f"the split has no {name} cases", store / "splits.json", "raise --cases"
            )
    raw = write_nnunet_raw(
        by_id, splits, work / "nnunet" / "nnUNet_raw" / DATASET_NAME, plan.mirroring_cases
    )
    gt = work / "test_labels"
    gt.mkdir(parents=True, exist_ok=True)
    for case_id in splits["test"]:
        _write_label(by_id[case_id], gt / f"{case_id}.nii.gz")
    log(
        f"split: {len(splits['train'])} train / {len(splits['val'])} val / "
        f"{len(splits['test'])} test cases; nnU-Net raw dataset → {raw}"
    )
    return {
        "root": root,
        "store": store,
        "splits": splits,
        "raw": raw,
        "gt": gt,
        "test_images": [by_id[c].image for c in splits["test"]],
        "prepare_s": prep.seconds,
    }


def shrink_scans(root: Path, slices: int | None) -> None:
    """Every 2nd voxel in-plane (and only the central `slices` slices): nnU-Net's CPU
    prediction of a demo scan takes minutes on a small CPU. nibabel's slicer keeps each
    affine exact."""
    import nibabel as nib

    from amoseg.data.datasets import find_cases

    for case in find_cases(root):
        for path in (case.image, case.label):
            img = nib.load(str(path))
            if img.shape[0] <= 96:
                continue  # already shrunk (a resumed smoke run)
            mid, half = img.shape[2] // 2, (slices or img.shape[2]) // 2
            z = slice(max(0, mid - half), mid + half) if slices else slice(None)
            small = img.slicer[::2, ::2, z]
            small = type(img)(np.asarray(small.dataobj), small.affine, small.header)
            nib.save(small, str(path))


def select_cases(cases: list, root: Path) -> None:
    """A small AMOS-format root holding only the chosen cases (symlinks, nothing copied)."""
    from amoseg.atomic import write_json

    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    entries = []
    for case in cases:
        image = root / "imagesTr" / case.image.name
        label = root / "labelsTr" / case.label.name
        for link, source in ((image, case.image), (label, case.label)):
            link.unlink(missing_ok=True)
            link.symlink_to(source.resolve())
        entries.append({"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{label.name}"})
    write_json(root / "dataset.json", {"training": entries, "validation": []})


def _copy_nifti_gz(source: Path, target: Path) -> None:
    """nnU-Net needs one file ending for every file; .nii inputs are re-saved gzipped."""
    if source.name.endswith(".nii.gz"):
        shutil.copyfile(source, target)
    else:
        import nibabel as nib

        nib.save(nib.load(str(source)), str(target))


def _write_label(case: Any, target: Path) -> None:
    """A label map in AMOS ids: a dataset whose dataset.json numbers organs otherwise carries
    `label_lut` (file id → AMOS id), applied here as `amoseg prepare` applies it."""
    lut = getattr(case, "label_lut", None)
    if lut is None:
        _copy_nifti_gz(case.label, target)
        return
    import nibabel as nib

    img = nib.load(str(case.label))
    ids = np.asarray(lut, np.uint8)[np.asarray(img.dataobj).astype(np.int64)]
    nib.save(nib.Nifti1Image(ids, img.affine, img.header), str(target))


def write_nnunet_raw(
    by_id: dict, splits: dict[str, list[str]], raw: Path, mirroring_cases: int | None = None
) -> Path:
    """nnU-Net's raw layout: train + val cases in imagesTr/labelsTr, test images in imagesTs
    (and the first `mirroring_cases` of them, links, in imagesTs_mirroring)."""
    from amoseg.atomic import write_json
    from amoseg.labels import CLASS_NAMES

    for folder in ("imagesTr", "labelsTr", "imagesTs"):
        (raw / folder).mkdir(parents=True, exist_ok=True)
    training = splits["train"] + splits["val"]
    for case_id in training:
        case = by_id[case_id]
        _copy_nifti_gz(case.image, raw / "imagesTr" / f"{case_id}_0000.nii.gz")
        _write_label(case, raw / "labelsTr" / f"{case_id}.nii.gz")
    for case_id in splits["test"]:
        _copy_nifti_gz(by_id[case_id].image, raw / "imagesTs" / f"{case_id}_0000.nii.gz")
    mirror = raw / "imagesTs_mirroring"
    mirror.mkdir(exist_ok=True)
    for case_id in splits["test"][:mirroring_cases]:
        link = mirror / f"{case_id}_0000.nii.gz"
        link.unlink(missing_ok=True)
        link.symlink_to(raw / "imagesTs" / link.name)
    modalities = {by_id[c].modality for c in training}
    # "CT" selects nnU-Net's CT normalisation (dataset-wide HU percentiles); MR or mixed
    # data get its per-image z-score.
    channel = "CT" if modalities == {"ct"} else "MRI"
    write_json(
        raw / "dataset.json",
        {
            "name": DATASET_NAME,
            "description": "written by amoseg bench/vs_nnunet.py",
            "channel_names": {"0": channel},
            "labels": {name: i for i, name in enumerate(CLASS_NAMES)},
            "numTraining": len(training),
            "file_ending": ".nii.gz",
        },
    )
    return raw


# --- the tools ------------------------------------------------------------------------------


def nnunet_env(plan: Plan, work: Path, base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(
        nnUNet_raw=str(work / "nnunet" / "nnUNet_raw"),
        nnUNet_preprocessed=str(work / "nnunet" / "nnUNet_preprocessed"),
        nnUNet_results=str(work / "nnunet" / "nnUNet_results"),
        # nnU-Net's defaults (8 export/predict processes, 12 augmentation workers) assume a
        # big workstation; on a small machine they only oversubscribe its cores.
        nnUNet_def_n_proc=str(plan.threads),
        AMOSEG_BENCH_THREADS=str(plan.threads),
        nnUNet_n_proc_DA=str(plan.threads),
        AMOSEG_BENCH_BUDGET_S=str(plan.budget_s),
        AMOSEG_BENCH_ITERS=str(plan.nnunet_iters),
        AMOSEG_BENCH_VAL_ITERS=str(plan.nnunet_val_iters),
        AMOSEG_BENCH_EPOCHS=str(plan.nnunet_epochs),
    )
    return env


def nnunet_plan(plan: Plan, work: Path, env: dict[str, str], splits: dict) -> float:
    log("nnU-Net: plan and preprocess (2d, 3d_fullres)")
    measured = run_measured(
        nnunet_cmd(
            "nnUNetv2_plan_and_preprocess",
            *("-d", str(DATASET_ID), "-c", *NNUNET_CONFIGS),
            *("-np", *[str(plan.threads)] * len(NNUNET_CONFIGS)),
            *("-npfp", str(plan.threads), "--verify_dataset_integrity"),
        ),
        env,
        work / "logs" / "nnunet_plan_and_preprocess.log",
        what="nnUNetv2_plan_and_preprocess",
    )
    # Fold 0 = amoseg's own split: the same cases train, the same cases validate.
    folds = [{"train": splits["train"], "val": splits["val"]}]
    target = work / "nnunet" / "nnUNet_preprocessed" / DATASET_NAME / "splits_final.json"
    target.write_text(json.dumps(folds, indent=1))
    return measured.seconds


def nnunet_configuration_planned(work: Path, configuration: str) -> bool:
    plans = work / "nnunet" / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json"
    return configuration in json.loads(plans.read_text())["configurations"]


def run_nnunet(plan: Plan, work: Path, env: dict[str, str], data: dict, configuration: str) -> Row:
    """Train one configuration under the budget; predict the test cases without mirroring."""
    row = Row("nnU-Net", configuration)
    gpu = plan.device == "cuda"
    fold = (
        work
        / "nnunet"
        / "nnUNet_results"
        / DATASET_NAME
        / f"{TRAINER}__nnUNetPlans__{configuration}"
        / "fold_0"
    )
    log(f"nnU-Net {configuration}: train ({plan.budget_s:.0f} s budget)")
    trained = run_measured(
        nnunet_cmd(
            "nnUNetv2_train",
            *(str(DATASET_ID), configuration, "0", "-tr", TRAINER, "-device", plan.device),
        ),
        env,
        work / "logs" / f"nnunet_{configuration}_train.log",
        gpu=gpu,
        what=f"nnUNetv2_train {configuration}",
        fresh=fold,
    )
    budget = json.loads((fold / "amoseg_budget.json").read_text())
    row.train_s, row.epochs = budget["loop_seconds"], budget["epochs"]
    row.train_wall_s = trained.seconds
    row.notes.append(
        f"{budget['epochs']} epochs × {budget['iterations_per_epoch']} iterations, batch "
        f"{budget['batch_size']}, patch {'×'.join(map(str, budget['patch_size']))}"
    )
    measured, report = nnunet_predict(plan, work, env, data, configuration, mirroring=False)
    row.predict_s_per_case = measured.seconds / report["n_cases"]
    # The table's accuracy: the same test cases for every tool, without mirroring (amoseg has
    # none); nnU-Net's default, mirroring, is added by add_mirroring on the cases it ran on.
    fill_scores(row, report)
    row.peak_ram_mib = max(trained.peak_ram_mib, measured.peak_ram_mib)
    if gpu:
        row.peak_gpu_mib = max(trained.peak_gpu_mib or 0.0, measured.peak_gpu_mib or 0.0)
    return row


def nnunet_predict(
    plan: Plan, work: Path, env: dict[str, str], data: dict, configuration: str, mirroring: bool
) -> tuple[Measured, dict[str, Any]]:
    tag = f"{configuration}{'_tta' if mirroring else ''}"
    pred = work / "predictions" / f"nnunet_{tag}"
    images = data["raw"] / ("imagesTs_mirroring" if mirroring else "imagesTs")
    n_test = len(list(images.iterdir()))
    log(f"nnU-Net {configuration}: predict {n_test} test case(s), mirroring {mirroring}")
    measured = run_measured(
        nnunet_cmd(
            "nnUNetv2_predict",
            *("-i", str(images), "-o", str(pred)),
            *("-d", str(DATASET_ID), "-c", configuration, "-f", "0", "-tr", TRAINER),
            *("-device", plan.device, "-npp", "1", "-nps", "1"),
            *([] if mirroring else ["--disable_tta"]),
        ),
        env,
        work / "logs" / f"nnunet_{tag}_predict.log",
        gpu=plan.device == "cuda",
        what=f"nnUNetv2_predict {configuration}",
        fresh=pred,
    )
    return measured, score(pred, data["gt"], work, f"nnunet_{tag}", env, subset=True)


def add_mirroring(plan: Plan, work: Path, env: dict[str, str], data: dict, row: Row) -> None:
    """nnU-Net's default prediction (mirroring) on the first --mirroring-cases test cases;
    run last, so that a slow CPU can stop it (--resume --mirroring-cases 0) and keep the rest."""
    measured, report = nnunet_predict(plan, work, env, data, row.configuration, mirroring=True)
    row.predict_s_per_case_mirroring = measured.seconds / report["n_cases"]
    row.mean_dice_mirroring = report["mean_case_dice"]
    row.peak_ram_mib = max(row.peak_ram_mib or 0.0, measured.peak_ram_mib)
    if measured.peak_gpu_mib is not None:
        row.peak_gpu_mib = max(row.peak_gpu_mib or 0.0, measured.peak_gpu_mib)
    row.notes.append(
        f"with mirroring ({report['n_cases']} case(s)): Dice {pct(report['mean_case_dice'])}, "
        f"NSD {pct(report['mean_nsd'])}"
    )


def amoseg_has_model(name: str) -> bool:
    from amoseg.models.registry import model_class

    try:
        model_class(name)
    except AmosegError:
        return False
    return True


def run_amoseg(plan: Plan, work: Path, env: dict[str, str], data: dict, model: str) -> Row:
    row = Row("amoseg", model)
    gpu = plan.device == "cuda"
    runs = work / "amoseg_runs"
    common = ("--data", str(data["store"]), "--device", plan.device, "--seed", "0")
    slices = ("--max-slices", str(plan.max_slices)) if plan.max_slices else ()
    log(f"amoseg {model}: two calibration epochs (not counted)")
    run_measured(
        amoseg_cmd(
            "train",
            model,
            *common,
            "--out",
            str(runs / f"{model}-calibration"),
            *slices,
            "--epochs",
            "2",
        ),
        env,
        work / "logs" / f"amoseg_{model}_calibration.log",
        gpu=gpu,
        what=f"amoseg train {model} (calibration)",
        fresh=runs / f"{model}-calibration",
    )
    import csv

    with open(runs / f"{model}-calibration" / "log.csv") as f:
        epoch_s = float(list(csv.DictReader(f))[-1]["seconds"])  # the warm epoch
    epochs = int(plan.budget_s // max(epoch_s, 1e-6))
    budget_args: tuple[str, ...] = slices
    if epochs < 1:  # a whole epoch does not fit: one epoch over a share of the slices
        n_slices = plan.max_slices or _train_slices(data["store"])  # what calibration saw
        budget_args = ("--max-slices", str(max(1, int(n_slices * plan.budget_s / epoch_s))))
        epochs = 1
    run_dir = runs / model
    log(f"amoseg {model}: train {epochs} epoch(s) ({epoch_s:.1f} s each; {plan.budget_s:.0f} s)")
    trained = run_measured(
        amoseg_cmd(
            "train", model, *common, "--out", str(run_dir), *budget_args, "--epochs", str(epochs)
        ),
        env,
        work / "logs" / f"amoseg_{model}_train.log",
        gpu=gpu,
        stop_after_s=plan.budget_s * 1.5 + 60,  # a guard only: the epochs were sized to fit
        what=f"amoseg train {model}",
        fresh=run_dir,
    )
    latest = run_dir / "summary.json"
    if latest.exists():
        summary = json.loads(latest.read_text())
        row.train_s, row.epochs = summary["train_seconds"], summary["epoch"]
    else:  # stopped by the guard: the latest checkpoint's log says how far it got
        rows = list(csv.DictReader((run_dir / "log.csv").open()))
        row.train_s = sum(float(r["seconds"]) for r in rows)
        row.epochs = len(rows)
        row.notes.append("stopped by the budget guard")
    row.train_wall_s = trained.seconds
    row.notes.append(f"{row.epochs} epoch(s), warm calibration epoch {epoch_s:.1f} s")
    pred = work / "predictions" / f"amoseg_{model}"
    n_test = len(data["test_images"])
    log(f"amoseg {model}: predict {n_test} test case(s)")
    measured = run_measured(
        amoseg_cmd(
            "predict",
            str(run_dir),
            *map(str, data["test_images"]),
            *("-o", str(pred), "--device", plan.device),
        ),
        env,
        work / "logs" / f"amoseg_{model}_predict.log",
        gpu=gpu,
        what=f"amoseg predict {model}",
        fresh=pred,
    )
    row.predict_s_per_case = measured.seconds / n_test
    for seg in pred.glob("*_volumes.*"):  # keep only the label maps in the scored folder
        seg.unlink()
    fill_scores(row, score(pred, data["gt"], work, f"amoseg_{model}", env))
    row.peak_ram_mib = max(trained.peak_ram_mib, measured.peak_ram_mib)
    if gpu:
        row.peak_gpu_mib = max(trained.peak_gpu_mib or 0.0, measured.peak_gpu_mib or 0.0)
    return row


def _train_slices(store: Path) -> int:
    summary = json.loads((store / "summary.json").read_text())
    return int(summary["splits"]["train"]["slices"])


# --- scoring ---------------------------------------------------------------------------------


def score(
    pred: Path, gt: Path, work: Path, tag: str, env: dict[str, str], subset: bool = False
) -> dict[str, Any]:
    target = work / "scores" / f"{tag}.json"
    run_measured(
        amoseg_cmd("score", str(pred), str(gt), "--json", str(target))
        + (["--subset"] if subset else []),
        env,
        work / "logs" / f"score_{tag}.log",
        what=f"amoseg score {tag}",
    )
    return json.loads(target.read_text())


def fill_scores(row: Row, report: dict[str, Any]) -> None:
    row.mean_dice = report["mean_case_dice"]
    row.mean_nsd = report["mean_nsd"]
    row.per_organ_dice = {
        r["name"]: None if r["absent"] else r.get("case_dice")
        for r in report["per_class"]
        if r["id"] != 0
    }


def scorer_check(work: Path, env: dict[str, str], data: dict, configuration: str) -> dict:
    """nnUNetv2_evaluate_folder on the same files: its per-organ mean Dice vs amoseg score's."""
    pred = work / "predictions" / f"nnunet_{configuration}"
    target = work / "scores" / f"nnunet_evaluate_folder_{configuration}.json"
    plans = work / "nnunet" / "nnUNet_preprocessed" / DATASET_NAME / "nnUNetPlans.json"
    log(f"scorer check: nnUNetv2_evaluate_folder on nnU-Net {configuration}'s predictions")
    run_measured(
        nnunet_cmd(
            "nnUNetv2_evaluate_folder",
            str(data["gt"]),
            str(pred),
            *("-djfile", str(data["raw"] / "dataset.json"), "-pfile", str(plans)),
            *("-o", str(target)),
        ),
        env,
        work / "logs" / "nnunet_evaluate_folder.log",
        what="nnUNetv2_evaluate_folder",
    )
    theirs = json.loads(target.read_text())["mean"]
    ours = json.loads((work / "scores" / f"nnunet_{configuration}.json").read_text())
    diffs = {}
    for r in ours["per_class"]:
        key = str(r["id"])
        if r["id"] == 0 or key not in theirs:
            continue
        a, b = r.get("case_dice"), theirs[key].get("Dice")
        if a is None or b is None or (isinstance(b, float) and math.isnan(b)):
            diffs[r["name"]] = None if (a is None) == (b is None or math.isnan(b)) else math.inf
            continue
        diffs[r["name"]] = abs(float(a) - float(b))
    finite = [d for d in diffs.values() if d is not None]
    worst = max(finite) if finite else 0.0
    check = {
        "configuration": configuration,
        "organs_compared": len(finite),
        "max_abs_dice_difference": worst,
        "agree": worst < 1e-6,
        "per_organ_abs_difference": diffs,
    }
    verdict = "agree" if check["agree"] else "DISAGREE"
    log(
        f"scorer check: amoseg score and nnUNetv2_evaluate_folder {verdict} on {len(finite)} "
        f"organs (largest |ΔDice| {worst:.2e})"
    )
    return check


# --- the table -------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def num(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def table(rows: list[Row]) -> str:
    """Models as columns, figures as rows (15 organs would not fit as columns)."""
    head = ["", *[f"{r.tool} {r.configuration}" for r in rows]]
    lines = [
        ("training s (budgeted loop)", [num(r.train_s, 0) for r in rows]),
        ("training wall s (whole command)", [num(r.train_wall_s, 0) for r in rows]),
        ("epochs", [str(r.epochs) if r.epochs is not None else "—" for r in rows]),
        ("predict s / case, no mirroring", [num(r.predict_s_per_case) for r in rows]),
        ("predict s / case, mirroring", [num(r.predict_s_per_case_mirroring) for r in rows]),
        ("peak RAM MiB", [num(r.peak_ram_mib, 0) for r in rows]),
        ("peak GPU MiB", [num(r.peak_gpu_mib, 0) for r in rows]),
        ("**mean organ Dice %**", [pct(r.mean_dice) for r in rows]),
        ("**mean organ NSD % (2 mm)**", [pct(r.mean_nsd) for r in rows]),
    ]
    organs = list(rows[0].per_organ_dice) if rows else []
    lines += [(f"Dice % {o}", [pct(r.per_organ_dice.get(o)) for r in rows]) for o in organs]
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(rows)]
    out += ["| " + " | ".join([name, *cells]) + " |" for name, cells in lines]
    return "\n".join(out)


# --- main ------------------------------------------------------------------------------------


def parse_plan(argv: list[str] | None = None) -> Plan:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/vs-nnunet"), help="new or empty folder")
    p.add_argument("--root", type=Path, default=None, help="AMOS-format folder (default: synth)")
    p.add_argument("--cases", type=int, default=None, help="scans used (default 20; smoke 4)")
    p.add_argument("--budget-min", type=float, default=None, help="training minutes per model")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads for every tool (default: all cores; 1 on a busy machine is faster)",
    )
    p.add_argument("--size", type=int, default=None, help="amoseg slice size (default 128)")
    p.add_argument("--nnunet-iters", type=int, default=None, help="nnU-Net iterations / epoch")
    p.add_argument(
        "--mirroring-cases",
        type=int,
        default=None,
        help="test cases nnU-Net also predicts with mirroring (default: all; CPU: 1; 0: none)",
    )
    p.add_argument(
        "--shrink",
        action="store_true",
        help="synthetic scans at every 2nd voxel in-plane (64-80²): CPU-sized (smoke: always)",
    )
    p.add_argument(
        "--amoseg-models",
        nargs="+",
        default=list(AMOSEG_MODELS),
        help=f"amoseg models to run when registered (default: {' '.join(AMOSEG_MODELS)})",
    )
    p.add_argument("--smoke", action="store_true", help="minutes end to end: checks the bench")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    p.add_argument("--resume", action="store_true", help="reuse finished steps of a run in --out")
    a = p.parse_args(argv)
    smoke = a.smoke
    cases = a.cases if a.cases is not None else (4 if smoke else 20)
    if cases < 4:
        raise AmosegError("--cases must be at least 4 (train, val and test need one each)")
    budget_min = a.budget_min if a.budget_min is not None else (0.1 if smoke else 8.0)
    if not budget_min > 0:
        raise AmosegError("--budget-min must be positive")
    iters = a.nnunet_iters or (1 if smoke else 50)
    return Plan(
        out=a.out,
        root=a.root,
        cases=cases,
        budget_s=60.0 * budget_min,
        device=a.device,
        threads=max(1, a.threads),
        size=a.size or (64 if smoke else 128),
        nnunet_iters=iters,
        nnunet_val_iters=1 if smoke else 2,
        max_slices=32 if smoke else None,
        mirroring_cases=a.mirroring_cases
        if a.mirroring_cases is not None
        else (1 if a.device == "cpu" else None),
        shrink=a.shrink or smoke,
        amoseg_models=tuple(a.amoseg_models),
        nnunet_epochs=2 if smoke else 8,
        smoke=smoke,
    )


def claim_out(plan: Plan, overwrite: bool, resume: bool = False) -> Path:
    out = plan.out
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists() and not (out / ".vs_nnunet").exists():
            raise AmosegError(
                "output folder is not empty and holds no earlier benchmark", out, "pick a new one"
            )
        if resume:
            return out.resolve()
        if not overwrite:
            raise AmosegError(
                "output folder holds an earlier run", out, "pass --resume or --overwrite"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / ".vs_nnunet").write_text("bench/vs_nnunet.py output folder\n")
    return out.resolve()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    plan = parse_plan(argv)
    args = argv if argv is not None else sys.argv[1:]
    overwrite, resume = "--overwrite" in args, "--resume" in args
    if plan.device == "cuda" and shutil.which("nvidia-smi") is None:
        raise AmosegError(
            "--device cuda but no nvidia-smi on this machine", hint="use --device cpu"
        )
    if plan.root is not None and not plan.root.is_dir():
        raise AmosegError("--root is not a folder", plan.root)
    out = claim_out(plan, overwrite, resume)
    ensure_nnunet_venv()
    scratch = tempfile.mkdtemp(prefix="amoseg-vs-")  # short: see the module docstring
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(plan.threads),
        AMOSEG_BENCH_THREADS=str(plan.threads),
        MPLCONFIGDIR=str(Path(scratch) / "matplotlib"),
        TMPDIR=scratch,
        PYTHONUNBUFFERED="1",
    )
    started = time.perf_counter()
    data = write_dataset(plan, out, env)
    nn_env = nnunet_env(plan, out, env)
    plan_s = nnunet_plan(plan, out, nn_env, data["splits"])
    rows: list[Row] = []
    skipped: list[str] = []
    for configuration in NNUNET_CONFIGS:
        if not nnunet_configuration_planned(out, configuration):
            skipped.append(f"nnU-Net {configuration}: not in nnU-Net's plans for this data")
            continue
        rows.append(run_nnunet(plan, out, nn_env, data, configuration))
    check = scorer_check(out, nn_env, data, NNUNET_CONFIGS[0]) if rows else None
    for model in plan.amoseg_models:
        if not amoseg_has_model(model):
            note = f"amoseg {model}: not in this checkout's model registry, skipped"
            log(note)
            skipped.append(note)
            continue
        rows.append(run_amoseg(plan, out, env, data, model))
    for row in rows:
        if row.tool == "nnU-Net" and plan.mirroring_cases != 0:
            add_mirroring(plan, out, nn_env, data, row)
    text = table(rows)
    machine = f"{os.cpu_count()} CPU cores, {plan.threads} threads, device {plan.device}"
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "plan": {k: str(v) if isinstance(v, Path) else v for k, v in plan.__dict__.items()},
        "data": {
            "root": str(plan.root) if plan.root else "amoseg synth --preset demo (synthetic)",
            "splits": data["splits"],
        },
        "seconds": {
            "amoseg_prepare": data["prepare_s"],
            "nnunet_plan_and_preprocess": plan_s,
            "total": time.perf_counter() - started,
        },
        "rows": [r.__dict__ for r in rows],
        "skipped": skipped,
        "scorer_check": check,
        "table_markdown": text,
    }
    from amoseg.atomic import write_json, write_text

    write_json(out / MARKER, result)
    notes = [f"- {r.tool} {r.configuration}: {'; '.join(r.notes)}" for r in rows] + [
        f"- {s}" for s in skipped
    ]
    write_text(out / "vs_nnunet.md", text + "\n\n" + "\n".join(notes) + "\n")
    print()
    print(text)
    print("\n".join(notes))
    if check is not None:
        print(
            f"scorer check ({check['configuration']}): amoseg score vs nnUNetv2_evaluate_folder, "
            f"largest per-organ |ΔDice| {check['max_abs_dice_difference']:.2e} over "
            f"{check['organs_compared']} organs → {'agree' if check['agree'] else 'DISAGREE'}"
        )
    print(f"wrote {out / MARKER} and {out / 'vs_nnunet.md'} ({result['seconds']['total']:.0f} s)")
    return result


if __name__ == "__main__":
    # A shell's background job inherits SIGINT ignored; Ctrl-C and the budget guard need it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
    except AmosegError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
