"""Dice against minutes of training: amoseg's recipes beside nnU-Net v2, same scans, same clock.

    python bench/curves.py --out runs/curves                    # 40 full-preset phantoms, 60 min
    python bench/curves.py --out runs/curves --resume           # continue a stopped run
    python bench/curves.py --out /tmp/curves-smoke --smoke      # minutes: tiny data and budget

Every arm trains once for --budget-min minutes of its own training clock (amoseg: `train
--time-budget`, epochs and their validation, each epoch at most a tenth of the budget;
nnU-Net: bench/nnunet_budget_trainer.py, its loop after the augmentation workers' warm-up)
and leaves a snapshot at each mark of --marks (minutes; the first epoch whose clock reaches
the mark, and the run's end for the last mark).
Each snapshot predicts the test scans (`amoseg predict`, `nnUNetv2_predict -chk ...`, both
without mirroring) and `amoseg score` scores them on the scans' own grids (Dice, NSD at 2 mm).

Arms (--arms): `amoseg-2d` (`unet` on the planned `2d` store), `amoseg-3d_lowres` (`unet3d`
on the `3d_lowres` store, when the plan has one, or with --lowres-spacing MM, which also adds
the cascade), `amoseg-3d_cascade_fullres` (below), `nnunet-2d`, `nnunet-3d_lowres` (when
nnU-Net plans one) and `nnunet-3d_fullres`. nnU-Net's own cascade is not an arm: it needs the
5-fold `3d_lowres` cross-validation's predictions, five full nnU-Net trainings.

The cascade arm's clock counts both stages: the arm gets --budget-min in all. A share f
(--cascade-lowres-share, default 1/3) goes to its low-resolution stage: `unet3d` trained on
each of the k folds of the `3d_lowres` store that hold validation cases (`amoseg prepare`
deals 5 folds; `prepare --previous` needs a run of each: k = 5 from 5 labelled cases on, 4 in
the smoke run) for budget·f/k minutes each (`train --fold K --time-budget`). `prepare
--configuration 3d_cascade_fullres --previous` then predicts every case with the fold that
held it out (not on the clock, as no arm's preparation is; its seconds are recorded), and
the full-resolution stage trains for what the folds left of the budget (budget minus their
measured minutes, each within an epoch of its own budget; at least 5 % of the budget). The
arm's clock is the folds' minutes plus the stage's own, so a mark m falls on the stage's
clock at m minus the folds' minutes; marks within the folds' minutes have no cascade yet
(no score). A snapshot holds both stages (the run's previous/) and `amoseg predict` runs
both on the test scans.

Data: `amoseg synth OUT/amos --cases N --preset P` (fixed seed) unless --root names an
AMOS-format folder; `amoseg prepare` splits by scan with --test-cases scans held out (the same
split for every tool: bench/vs_nnunet.py writes nnU-Net's raw dataset and fold 0 from it).
CPU seconds (user + system of this process and its children: DataLoader and nnU-Net's
augmentation workers included) are recorded per arm.

Resumable: every finished command leaves logs/<step>.json (bench/vs_nnunet.run_measured) and
is not run again; an amoseg arm that was stopped (a cascade fold run or stage included)
continues from its checkpoint_latest.pt (`train --resume`, its clock and LR plan included);
an nnU-Net arm that was stopped starts its training again.
Writes OUT/curves.json and OUT/curves.png.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import vs_nnunet as vs  # noqa: E402

from amoseg.atomic import read_json, write_json  # noqa: E402
from amoseg.errors import AmosegError  # noqa: E402

ARMS = (
    "amoseg-2d",
    "amoseg-3d_lowres",
    "amoseg-3d_cascade_fullres",
    "nnunet-2d",
    "nnunet-3d_lowres",
    "nnunet-3d_fullres",
)
MODEL_OF = {"2d": "unet", "3d_lowres": "unet3d", "3d_cascade_fullres": "unet3d"}
#: the cascade arm's share of --budget-min for its 3d_lowres folds (--cascade-lowres-share)
CASCADE_LOWRES_SHARE = 1 / 3
#: the least of the budget its full-resolution stage gets, whatever the folds overran
MIN_STAGE_SHARE = 0.05
DEFAULT_MARKS = (5.0, 10.0, 20.0, 30.0, 60.0)


@dataclass(frozen=True)
class Setup:
    out: Path
    root: Path | None
    cases: int
    test_cases: int
    preset: str
    budget_min: float
    marks: tuple[float, ...]
    arms: tuple[str, ...]
    seed: int
    threads: int
    workers: int
    lowres_spacing: float | None
    cascade_share: float
    nnunet_iters: int
    smoke: bool
    hparams: dict
    #: the marks scored in this run (None: all); the others wait for a later --resume without
    #: --score-marks (predicting 8 full-size scans with a slow arm can take an hour a mark)
    score_marks: tuple[float, ...] | None = None

    def scored(self, mark: float, arm: str = "") -> bool:
        """Whether to score `arm`'s `mark` in this run: every mark without --score-marks,
        else the chosen ones and those already scored (their results are kept)."""
        done = self.out / "scores" / f"{arm}-{mark_tag(mark)}.json"
        return self.score_marks is None or mark in self.score_marks or done.exists()


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def mark_tag(minutes: float) -> str:
    return f"m{minutes:g}".replace(".", "_")


# --- data ------------------------------------------------------------------------------------


def make_data(setup: Setup, env: dict[str, str]) -> dict[str, Any]:
    """The scans, one split for every tool, the test labels, nnU-Net's raw dataset."""
    from amoseg.data.datasets import find_cases

    out = setup.out
    root = setup.root or out / "amos"
    if setup.root is None:
        vs.run_measured(
            vs.amoseg_cmd(
                "synth",
                str(root),
                "--cases",
                str(setup.cases),
                "--preset",
                setup.preset,
                "--seed",
                str(setup.seed),
            ),
            env,
            out / "logs" / "synth.log",
            what="amoseg synth",
            fresh=root,
        )
    test = setup.test_cases / setup.cases
    val = max(1 / setup.cases, 0.1)
    split = f"{1 - test - val:.4f},{val:.4f},{test:.4f}"
    lowres = ["--lowres-spacing", f"{setup.lowres_spacing:g}"] if setup.lowres_spacing else []
    vs.run_measured(
        vs.amoseg_cmd(
            "plan", str(root), "-o", str(out / "plan.json"), "--quiet", "--overwrite", *lowres
        ),
        env,
        out / "logs" / "plan.log",
        what="amoseg plan",
    )
    plan = read_json(out / "plan.json")["configurations"]
    stores = {}
    for conf in ("2d", "3d_lowres"):
        if conf not in plan:
            continue
        stores[conf] = out / f"store-{conf}"
        vs.run_measured(
            vs.amoseg_cmd(
                "prepare",
                str(root),
                str(stores[conf]),
                "--plan",
                str(out / "plan.json"),
                "--configuration",
                conf,
                "--split",
                split,
                "--quiet",
            ),
            env,
            out / "logs" / f"prepare_{conf}.log",
            what=f"amoseg prepare {conf}",
            fresh=stores[conf],
        )
    any_store = stores["2d"]
    splits = json.loads((any_store / "splits.json").read_text())
    by_id = {c.case_id: c for c in find_cases(root)}
    raw = vs.write_nnunet_raw(by_id, splits, out / "nnunet" / "nnUNet_raw" / vs.DATASET_NAME, 0)
    gt = out / "test_labels"
    gt.mkdir(parents=True, exist_ok=True)
    for case_id in splits["test"]:
        vs._write_label(by_id[case_id], gt / f"{case_id}.nii.gz")
    test_dir = out / "test_images"
    test_dir.mkdir(exist_ok=True)
    for case_id in splits["test"]:
        link = test_dir / f"{case_id}.nii.gz"
        if not link.exists():
            link.symlink_to((raw / "imagesTs" / f"{case_id}_0000.nii.gz").resolve())
    vs.log(
        f"split: {len(splits['train'])} train / {len(splits['val'])} val / "
        f"{len(splits['test'])} test; stores: {', '.join(stores)}"
    )
    return {
        "root": root,
        "stores": stores,
        "splits": splits,
        "raw": raw,
        "gt": gt,
        "test_dir": test_dir,
    }


# --- amoseg arms -----------------------------------------------------------------------------


def run_amoseg_arm(setup: Setup, data: dict, conf: str) -> dict[str, Any]:
    """`train --time-budget` in this process, a snapshot run folder per mark, then predict +
    score each snapshot."""
    out = setup.out
    name = f"amoseg-{conf}"
    marks_dir = out / "runs" / f"{name}-marks"
    record = train_budgeted(
        setup,
        MODEL_OF[conf],
        data["stores"][conf],
        out / "runs" / name,
        setup.budget_min,
        done_file=out / "logs" / f"train_amoseg_{conf}.json",
        marks_dir=marks_dir,
        marks=[(mark_tag(m), m) for m in setup.marks],
        what=f"amoseg {conf}: train {MODEL_OF[conf]}",
    )
    arm = {
        "tool": "amoseg",
        "configuration": conf,
        "model": MODEL_OF[conf],
        "cpu_seconds": record["cpu_seconds"],
        "epochs": record["summary"]["epoch"],
        "train_seconds": record["summary"]["train_seconds"],
        "marks": [],
    }
    for m in setup.marks:
        if not setup.scored(m, name):
            arm["marks"].append(not_scored(m))
            continue
        arm["marks"].append(score_snapshot(setup, data, conf, m, marks_dir / mark_tag(m)))
    return arm


def train_budgeted(
    setup: Setup,
    model: str,
    store: Path,
    run: Path,
    minutes: float,
    *,
    done_file: Path,
    what: str,
    fold: int | None = None,
    marks_dir: Path | None = None,
    marks: list[tuple[str, float]] = (),  # type: ignore[assignment]
    offset_min: float = 0.0,
) -> dict[str, Any]:
    """One `train --time-budget MINUTES` run in this process (continued from its
    checkpoint_latest.pt when a stopped bench is resumed), unless `done_file` says it finished.

    `marks`: (tag, minutes of this run's clock) — a snapshot run folder marks_dir/tag at the
    first epoch whose clock reaches it (the run's final state for those it never reached);
    `offset_min` is added to the clock recorded in each snapshot's mark.json (the cascade's
    low-resolution folds). Returns the done record: cpu_seconds, wall_seconds, summary."""
    from amoseg.training import TrainSettings, train

    if not done_file.exists():
        settings = TrainSettings(
            time_budget=minutes,
            device="cpu",
            seed=setup.seed,
            num_workers=setup.workers,
            hparams=dict(setup.hparams),
            progress=not setup.smoke,
            val_native_end=False,
            fold=fold,
        )
        pending = sorted(
            (at, tag) for tag, at in marks if marks_dir and not (marks_dir / tag).exists()
        )

        def snapshot(epoch: int, _metrics: dict) -> None:
            clock = float(read_csv_last(run / "log.csv")["minutes"])
            while pending and clock >= pending[0][0]:
                keep_snapshot(run, marks_dir / pending.pop(0)[1], clock, epoch, offset_min)

        resume = (run / "checkpoint_latest.pt").exists()
        vs.log(f"{what} for {minutes:.3g} min" + (" (resumed)" if resume else ""))
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        summary = train(
            model,
            store,
            run,
            settings,
            resume=resume,
            overwrite=not resume and run.exists(),
            on_epoch=snapshot if pending else None,
        )
        for _, tag in pending:  # the run ended before these marks' clock: its final state
            keep_snapshot(
                run, marks_dir / tag, summary["train_seconds"] / 60, summary["epoch"], offset_min
            )
        write_json(
            done_file,
            {
                "cpu_seconds": cpu_seconds() - cpu0,
                "wall_seconds": time.perf_counter() - wall0,
                "summary": summary,
            },
        )
    return read_json(done_file)


def score_snapshot(
    setup: Setup, data: dict, conf: str, m: float, folder: Path | None
) -> dict[str, Any]:
    """Predict the test scans with a mark's snapshot (`amoseg predict`, every stage the run
    folder holds) and score them; `folder` None: no snapshot exists at this mark."""
    if folder is None:
        return {"mark_min": m, "clock_min": None, "epoch": None, "mean_dice": None,
                "mean_nsd": None, "per_organ_dice": None}  # fmt: skip
    out = setup.out
    pred = out / "predictions" / f"amoseg-{conf}-{mark_tag(m)}"
    vs.run_measured(
        vs.amoseg_cmd(
            "predict",
            str(folder),
            str(data["test_dir"]),
            "-o",
            str(pred),
            "--device",
            "cpu",
            "--no-tta",
        ),
        base_env(setup),
        out / "logs" / f"predict_amoseg_{conf}_{mark_tag(m)}.log",
        what=f"amoseg predict {conf} {m:g} min",
        fresh=pred,
    )
    for extra in pred.glob("*_volumes.*"):  # keep only the label maps in the scored folder
        extra.unlink()
    at = read_json(folder / "mark.json")
    return {"mark_min": m, **at, **scores(setup, pred, data, f"amoseg-{conf}", m)}


# --- the amoseg cascade arm ------------------------------------------------------------------


def lowres_folds(splits: dict[str, Any]) -> list[int]:
    """The 3d_lowres store's folds that hold validation cases: `prepare --previous` needs a
    run of each (every training case predicted by a fold run that never trained on it); a
    fold with an empty `val` (fewer labelled cases than folds) needs none."""
    return [k for k, fold in enumerate(splits.get("folds") or []) if fold.get("val")]


def cascade_budgets(budget_min: float, share: float, n_folds: int) -> dict[str, float]:
    """The planned split of the arm's `budget_min`: `share` of it to the low-resolution
    folds, equally (`fold_min` each), the rest to the full-resolution stage (`stage_min`)."""
    return {"fold_min": budget_min * share / n_folds, "stage_min": budget_min * (1 - share)}


def stage_budget(budget_min: float, folds_min: float) -> float:
    """The full-resolution stage's time budget: what the folds left of the arm's budget (each
    ends within an epoch of its own budget, before or after it: the difference goes to or
    comes out of the stage's share), but never under MIN_STAGE_SHARE of the budget (the
    stage always trains)."""
    return max(budget_min - folds_min, budget_min * MIN_STAGE_SHARE)


def stage_marks(marks: tuple[float, ...], folds_min: float) -> list[tuple[str, float]]:
    """(tag, minutes of the stage's own clock) of the arm's marks that fall after the
    low-resolution folds: the arm's clock is the folds' minutes plus the stage's."""
    return [(mark_tag(m), m - folds_min) for m in marks if m > folds_min]


def run_cascade_arm(setup: Setup, data: dict) -> dict[str, Any]:
    """amoseg's `3d_cascade_fullres`: `3d_lowres` fold runs (their share of the budget), the
    cascade store prepared from them (`prepare --previous`), the full-resolution stage for the
    rest of the budget, and a snapshot of it (both stages) at each mark."""
    conf = "3d_cascade_fullres"
    out = setup.out
    low_store = data["stores"]["3d_lowres"]
    folds = lowres_folds(read_json(low_store / "splits.json"))
    plan = cascade_budgets(setup.budget_min, setup.cascade_share, len(folds))
    prev = out / "runs" / f"amoseg-{conf}-lowres"
    cpu = 0.0
    fold_rows = []
    for k in folds:
        record = train_budgeted(
            setup,
            MODEL_OF["3d_lowres"],
            low_store,
            prev / f"fold_{k}",
            plan["fold_min"],
            fold=k,
            done_file=out / "logs" / f"train_amoseg_{conf}_lowres_fold{k}.json",
            what=f"amoseg {conf}: 3d_lowres fold {k} of {len(folds)}",
        )
        cpu += record["cpu_seconds"]
        fold_rows.append(
            {
                "fold": k,
                "budget_min": round(plan["fold_min"], 4),
                "epochs": record["summary"]["epoch"],
                "train_seconds": record["summary"]["train_seconds"],
            }
        )
    folds_min = sum(r["train_seconds"] for r in fold_rows) / 60
    store = out / f"store-{conf}"
    cpu_file = out / "logs" / f"prepare_{conf}_cpu.json"
    if not cpu_file.exists():
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        vs.run_measured(
            vs.amoseg_cmd(
                "prepare",
                str(data["root"]),
                str(store),
                "--plan",
                str(out / "plan.json"),
                "--configuration",
                conf,
                "--previous",
                str(prev),
                "--device",
                "cpu",
                "--quiet",
            ),
            base_env(setup),
            out / "logs" / f"prepare_{conf}.log",
            what=f"amoseg prepare {conf} --previous",
            fresh=store,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime)
        write_json(cpu_file, {"cpu_seconds": used})
    prepare_seconds = read_json(out / "logs" / f"prepare_{conf}.json")["seconds"]
    cpu += read_json(cpu_file)["cpu_seconds"]
    minutes = stage_budget(setup.budget_min, folds_min)
    marks = stage_marks(setup.marks, folds_min)
    marks_dir = out / "runs" / f"amoseg-{conf}-marks"
    record = train_budgeted(
        setup,
        MODEL_OF[conf],
        store,
        out / "runs" / f"amoseg-{conf}",
        minutes,
        done_file=out / "logs" / f"train_amoseg_{conf}.json",
        marks_dir=marks_dir,
        marks=marks,
        offset_min=folds_min,
        what=f"amoseg {conf}: train {MODEL_OF[conf]} (full-resolution stage)",
    )
    cpu += record["cpu_seconds"]
    stage_seconds = record["summary"]["train_seconds"]
    arm = {
        "tool": "amoseg",
        "configuration": conf,
        "model": MODEL_OF[conf],
        "cpu_seconds": cpu,
        "epochs": record["summary"]["epoch"],
        "train_seconds": folds_min * 60 + stage_seconds,
        "lowres_share": setup.cascade_share,
        "lowres_folds": fold_rows,
        "lowres_seconds": folds_min * 60,
        "stage_budget_min": round(minutes, 4),
        "stage_seconds": stage_seconds,
        "prepare_seconds": prepare_seconds,
        "marks": [],
    }
    reached = {tag for tag, _ in marks}
    for m in setup.marks:
        if not setup.scored(m, f"amoseg-{conf}"):
            arm["marks"].append(not_scored(m))
            continue
        folder = marks_dir / mark_tag(m) if mark_tag(m) in reached else None
        row = score_snapshot(setup, data, conf, m, folder)
        if folder is None:
            row["note"] = "the low-resolution folds were still training: no cascade yet"
        arm["marks"].append(row)
    return arm


def read_csv_last(path: Path) -> dict[str, str]:
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))[-1]


def keep_snapshot(
    run: Path, folder: Path, minutes: float, epoch: int, offset_min: float = 0.0
) -> None:
    """A run folder `amoseg predict` can load: the config and the latest weights as 'best'
    (and a cascade's previous/, its low-resolution stage); mark.json's clock is the arm's
    (`offset_min` + this run's minutes)."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(run / "config.json", tmp / "config.json")
    shutil.copyfile(run / "checkpoint_latest.pt", tmp / "checkpoint_best.pt")
    if (run / "previous").is_dir():
        shutil.copytree(run / "previous", tmp / "previous")
    at = {"clock_min": round(offset_min + minutes, 3), "epoch": epoch}
    if offset_min:
        at["stage_clock_min"] = round(minutes, 3)
    write_json(tmp / "mark.json", at)
    tmp.rename(folder)


# --- nnU-Net arms ----------------------------------------------------------------------------


def base_env(setup: Setup) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(setup.threads), PYTHONPATH=str(REPO))
    return env


def nnunet_setup(setup: Setup, data: dict) -> dict[str, str]:
    """Its venv and trainer, its environment (budget, marks), plan + preprocess, fold 0."""
    vs.ensure_nnunet_venv()
    out = setup.out
    env = base_env(setup)
    env.update(
        nnUNet_raw=str(out / "nnunet" / "nnUNet_raw"),
        nnUNet_preprocessed=str(out / "nnunet" / "nnUNet_preprocessed"),
        nnUNet_results=str(out / "nnunet" / "nnUNet_results"),
        nnUNet_def_n_proc=str(setup.threads),
        nnUNet_n_proc_DA=str(setup.threads),
        AMOSEG_BENCH_THREADS=str(setup.threads),
        AMOSEG_BENCH_BUDGET_S=str(setup.budget_min * 60),
        AMOSEG_BENCH_ITERS=str(setup.nnunet_iters),
        AMOSEG_BENCH_VAL_ITERS="2",
        AMOSEG_BENCH_EPOCHS="10",
        AMOSEG_BENCH_MARKS_S=",".join(f"{m * 60:g}" for m in setup.marks),
    )
    # only what its arms train: preprocessing a configuration costs minutes per case on a CPU
    confs = [a.split("-", 1)[1] for a in setup.arms if a.startswith("nnunet-")]
    vs.run_measured(
        vs.nnunet_cmd(
            "nnUNetv2_plan_and_preprocess",
            "-d",
            str(vs.DATASET_ID),
            "-c",
            *confs,
            "-np",
            *[str(setup.threads)] * len(confs),
            "-npfp",
            str(setup.threads),
        ),
        env,
        out / "logs" / "nnunet_plan_and_preprocess.log",
        what="nnU-Net plan and preprocess",
    )
    folds = [{"train": data["splits"]["train"], "val": data["splits"]["val"]}]
    target = out / "nnunet" / "nnUNet_preprocessed" / vs.DATASET_NAME / "splits_final.json"
    target.write_text(json.dumps(folds, indent=1))
    return env


def run_nnunet_arm(setup: Setup, data: dict, env: dict[str, str], conf: str) -> dict[str, Any]:
    out = setup.out
    fold = (
        out
        / "nnunet"
        / "nnUNet_results"
        / vs.DATASET_NAME
        / f"{vs.TRAINER}__nnUNetPlans__{conf}"
        / "fold_0"
    )
    log_file = out / "logs" / f"train_nnunet_{conf}.log"
    cpu_file = log_file.with_name(f"train_nnunet_{conf}_cpu.json")
    if not cpu_file.exists():
        vs.log(f"nnU-Net {conf}: train for {setup.budget_min:g} min")
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        vs.run_measured(
            vs.nnunet_cmd(
                "nnUNetv2_train", str(vs.DATASET_ID), conf, "0", "-tr", vs.TRAINER, "-device", "cpu"
            ),
            env,
            log_file,
            what=f"nnUNetv2_train {conf}",
            fresh=fold,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = (after.ru_utime + after.ru_stime) - (kids.ru_utime + kids.ru_stime)
        write_json(cpu_file, {"cpu_seconds": used})
    budget = read_json(fold / "amoseg_budget.json")
    arm = {
        "tool": "nnU-Net",
        "configuration": conf,
        "cpu_seconds": read_json(cpu_file)["cpu_seconds"],
        "epochs": budget["epochs"],
        "train_seconds": budget["loop_seconds"],
        "marks": [],
    }
    hit = {float(h["mark_s"]): h for h in budget.get("marks", [])}
    for m in setup.marks:
        if not setup.scored(m, f"nnunet-{conf}"):
            arm["marks"].append(not_scored(m))
            continue
        pred = out / "predictions" / f"nnunet-{conf}-{mark_tag(m)}"
        vs.run_measured(
            vs.nnunet_cmd(
                "nnUNetv2_predict",
                "-i",
                str(data["raw"] / "imagesTs"),
                "-o",
                str(pred),
                "-d",
                str(vs.DATASET_ID),
                "-c",
                conf,
                "-f",
                "0",
                "-tr",
                vs.TRAINER,
                "-chk",
                f"checkpoint_mark_{m * 60:g}.pth",
                "-device",
                "cpu",
                "-npp",
                "1",
                "-nps",
                "1",
                "--disable_tta",
            ),
            env,
            out / "logs" / f"predict_nnunet_{conf}_{mark_tag(m)}.log",
            what=f"nnUNetv2_predict {conf} {m:g} min",
            fresh=pred,
        )
        h = hit.get(m * 60, {})
        at = {"clock_min": round(h.get("seconds", math.nan) / 60, 3), "epoch": h.get("epochs")}
        arm["marks"].append({"mark_min": m, **at, **scores(setup, pred, data, f"nnunet-{conf}", m)})
    return arm


# --- scoring and output ----------------------------------------------------------------------


def not_scored(m: float) -> dict[str, Any]:
    """A mark left for a later --resume (--score-marks): its snapshot is kept, not scored."""
    return {"mark_min": m, "clock_min": None, "epoch": None, "mean_dice": None,
            "mean_nsd": None, "per_organ_dice": None,
            "note": "not scored yet (--score-marks): rerun with --resume"}  # fmt: skip


def scores(setup: Setup, pred: Path, data: dict, arm: str, m: float) -> dict[str, Any]:
    target = setup.out / "scores" / f"{arm}-{mark_tag(m)}.json"
    vs.run_measured(
        vs.amoseg_cmd("score", str(pred), str(data["gt"]), "--json", str(target)),
        base_env(setup),
        setup.out / "logs" / f"score_{arm}_{mark_tag(m)}.log",
        what=f"amoseg score {arm}",
    )
    report = read_json(target)
    organs = {
        r["name"]: (None if r["absent"] else r.get("case_dice"))
        for r in report["per_class"]
        if r["id"] != 0
    }
    return {
        "mean_dice": report["mean_case_dice"],
        "mean_nsd": report["mean_nsd"],
        "per_organ_dice": organs,
    }


def plot(result: dict[str, Any], target: Path) -> None:
    import io

    from matplotlib.figure import Figure

    from amoseg.atomic import write_bytes

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    for arm in result["arms"]:
        marks = [m for m in arm.get("marks", []) if m.get("mean_dice") is not None]
        if marks:
            ax.plot(
                [m["mark_min"] for m in marks],
                [100 * m["mean_dice"] for m in marks],
                marker="o",
                label=arm.get("label") or f"{arm['tool']} {arm['configuration']}",
            )
    ax.set_xlabel("minutes of training (each arm's own clock; the cascade's counts its folds)")
    ax.set_ylabel("mean organ Dice on the test scans (%)")
    ax.set_title(f"{result['n_test']} test scans, {result['machine']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    write_bytes(target, buf.getvalue())


def parse(argv: list[str] | None) -> tuple[Setup, bool, bool]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--root", type=Path, default=None, help="AMOS-format folder (else phantoms)")
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--test-cases", type=int, default=8)
    p.add_argument("--preset", default="full", help="amoseg synth preset (full, demo, ...)")
    p.add_argument("--budget-min", type=float, default=None, help="default 60 (smoke 0.2)")
    p.add_argument(
        "--marks",
        default=None,
        help="minutes, e.g. 5,10,20 (default: 5/10/20/30/60 up to the budget, and the budget)",
    )
    p.add_argument("--arms", default=",".join(ARMS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="amoseg DataLoader workers")
    p.add_argument(
        "--lowres-spacing",
        type=float,
        default=None,
        help="plan 3d_lowres (and the cascade) at this spacing in mm (amoseg plan "
        "--lowres-spacing) instead of nnU-Net's rule",
    )
    p.add_argument(
        "--cascade-lowres-share",
        type=float,
        default=CASCADE_LOWRES_SHARE,
        help="the cascade arm's share of --budget-min for its 3d_lowres folds (default 1/3)",
    )
    p.add_argument("--nnunet-iters", type=int, default=250)
    p.add_argument(
        "--hparams", default="{}", help='amoseg model hyper-parameters, e.g. {"base": 16}'
    )
    p.add_argument(
        "--nnunet-venv",
        type=Path,
        default=vs.VENV,
        help="nnU-Net's virtual environment (made by bench/vs_nnunet.py if absent)",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="6 demo phantoms, 2 test scans, 0.2 min, marks 0.1,0.2, 6 mm lowres",
    )
    p.add_argument(
        "--score-marks",
        default=None,
        help="score only these marks now, e.g. 20 (the rest on a later --resume without it)",
    )
    p.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    vs.VENV = a.nnunet_venv
    if a.smoke:
        a.cases, a.test_cases, a.preset = 6, 2, "demo"
        a.budget_min, a.marks = a.budget_min or 0.2, a.marks or "0.1,0.2"
        a.lowres_spacing, a.nnunet_iters, a.workers = a.lowres_spacing or 6.0, 5, 0
        a.hparams = a.hparams if a.hparams != "{}" else '{"base": 8}'
    a.budget_min = a.budget_min or 60.0
    if a.marks:
        marks = tuple(sorted(float(m) for m in a.marks.split(",")))
    else:
        marks = (*(m for m in DEFAULT_MARKS if m < a.budget_min), a.budget_min)
    if not marks or marks[-1] > a.budget_min or marks[0] <= 0:
        p.error("--marks must be > 0 and within --budget-min")
    score_marks = None
    if a.score_marks:
        score_marks = tuple(sorted(float(m) for m in a.score_marks.split(",")))
        if not set(score_marks) <= set(marks):
            p.error("--score-marks must be among the --marks")
    arms = tuple(x for x in a.arms.split(",") if x)
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        p.error(f"unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    if not 0 < a.cascade_lowres_share < 1:
        p.error("--cascade-lowres-share must be between 0 and 1 (exclusive)")
    if not 1 <= a.test_cases < a.cases - 1:
        p.error("--test-cases must leave at least 2 cases for training and validation")
    setup = Setup(
        a.out,
        a.root,
        a.cases,
        a.test_cases,
        a.preset,
        a.budget_min,
        marks,
        arms,
        a.seed,
        a.threads,
        a.workers,
        a.lowres_spacing,
        a.cascade_lowres_share,
        a.nnunet_iters,
        a.smoke,
        json.loads(a.hparams),
        score_marks,
    )
    return setup, a.resume, a.overwrite


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import platform

    setup, resume, overwrite = parse(argv)
    out = setup.out
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise AmosegError(
                "--out holds a run", out, "pass --resume to continue it or --overwrite"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "setup.json",
        {k: str(v) if isinstance(v, Path) else v for k, v in setup.__dict__.items()},
    )
    env = base_env(setup)
    data = make_data(setup, env)
    result: dict[str, Any] = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_at_start": list(__import__("os").getloadavg()),
        "budget_min": setup.budget_min,
        "marks_min": list(setup.marks),
        "n_test": len(data["splits"]["test"]),
        "arms": [],
    }
    nn_env = None
    for arm in setup.arms:
        tool, conf = arm.split("-", 1)
        needs = "3d_lowres" if conf == "3d_cascade_fullres" else conf
        if tool == "amoseg" and needs not in data["stores"]:
            why = f"the plan has no {needs} configuration (pass --lowres-spacing MM)"
            result["arms"].append({"tool": tool, "configuration": conf, "skipped": why})
            continue
        if tool == "amoseg" and conf == "3d_cascade_fullres":
            result["arms"].append(run_cascade_arm(setup, data))
        elif tool == "amoseg":
            result["arms"].append(run_amoseg_arm(setup, data, conf))
        else:
            nn_env = nn_env or nnunet_setup(setup, data)
            if not vs.nnunet_configuration_planned(out, conf):
                result["arms"].append(
                    {"tool": "nnU-Net", "configuration": conf, "skipped": "nnU-Net did not plan it"}
                )
                continue
            result["arms"].append(run_nnunet_arm(setup, data, nn_env, conf))
        write_json(out / "curves.json", result)  # after every arm: progress survives a stop
    write_json(out / "curves.json", result)
    plot(result, out / "curves.png")
    for arm in result["arms"]:
        line = ", ".join(
            f"{m['mark_min']:g} min "
            + ("-" if m["mean_dice"] is None else f"{100 * m['mean_dice']:.1f} %")
            for m in arm.get("marks", [])
        )
        vs.log(f"{arm['tool']} {arm['configuration']}: {line or arm.get('skipped')}")
    vs.log(f"wrote {out / 'curves.json'} and {out / 'curves.png'}")
    return result


if __name__ == "__main__":
    try:
        main()
    except AmosegError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("stopped: rerun with --resume to continue", file=sys.stderr)
        sys.exit(130)
