"""`amoseg demo`: the whole ladder end to end on synthetic AMOS-format data, in minutes on a CPU.

Stages, each in its own folder under OUT:

    OUT/amos/            synth: an AMOS22-layout dataset (demo preset, seed 0)
    OUT/store/           prepare: a slice store at a reduced size (organ slices only)
    OUT/runs/<model>/    train + evaluate, one run folder per model of the registry
    OUT/report/          compare: comparison.{md,csv,png}, timings.json

Re-running on the same OUT reuses every stage whose inputs are unchanged: a stage is done when
its marker OUT/stages/<stage>.json exists *and* records the same parameters (including those of
the stages it depends on); markers are written only after a stage completes, so an interrupted
stage is redone from scratch. `fresh=True` deletes OUT first (only if it is a demo folder).

Budgets are per model (PLAN) and chosen so that all seven fit in a few minutes on a 2-core
CPU: the demo compares recipes under a time budget, not at equal epochs (docs/demo.md).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amoseg.atomic import read_json, write_json
from amoseg.errors import AmosegError

SEED = 0
STAGES_DIR = "stages"
#: the demo's folder and its layout under OUT; README.md and docs/*.md name these paths
#: (`runs/demo/runs/unet`), and tests/test_doc_paths.py checks every one against them
DEFAULT_OUT = Path("runs/demo")
AMOS_DIR = "amos"
STORE_DIR = "store"
RUNS_DIR = "runs"
REPORT_DIR = "report"

# Per-model training budgets for the demo (epochs are multiplied by --epochs-scale).
# Keys other than "epochs" and "hparams" are TrainSettings fields.
PLAN: dict[str, dict[str, Any]] = {
    "prior": {"epochs": 1},
    "logreg-pixel": {"epochs": 5, "batch_size": 16},
    "logreg-3x3": {"epochs": 5, "batch_size": 16},
    "logreg-5x5": {"epochs": 5, "batch_size": 16},
    "mlp": {"epochs": 10, "batch_size": 16, "hparams": {"work_size": 48, "hidden": [64]}},
    # The report's recipe as written (batch 2, lr 7.9e-5, weighted CE). Both U-Nets get the same
    # epochs, so the table compares recipes at equal epochs.
    "unet-seed": {"epochs": 10, "hparams": {"base": 16}},
    "unet": {
        "epochs": 10,
        "hparams": {"base": 16, "norm": "window", "window": [-200.0, 300.0], "augment": False},
    },
}


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    out: Path = DEFAULT_OUT
    cases: int = 24
    size: int = 64
    epochs_scale: float = 1.0
    device: str = "auto"
    #: cap on training slices per epoch for every model (None: the whole train split);
    #: for smoke tests, not for results.
    max_slices: int | None = None
    #: torch CPU threads; None = all cores on an idle machine, 1 on a busy one (see below).
    threads: int | None = None
    fresh: bool = False
    progress: bool = True
    #: ct (the default ladder), or mixed: CT and MR phantoms at AMOS's 500:100 ratio, so the
    #: MR path (per-image z-score, no body crop) runs too; mr: MR only
    modality: str = "ct"


def model_settings(name: str, options: DemoOptions) -> dict[str, Any]:
    """TrainSettings keyword arguments for one model's demo run."""
    plan = dict(PLAN.get(name, {"epochs": 2}))
    epochs = max(1, round(plan.pop("epochs") * options.epochs_scale))
    hparams = dict(plan.pop("hparams", {}))
    if options.max_slices is not None:
        plan["max_slices_per_epoch"] = options.max_slices
    if "work_size" in hparams:  # the dense net never works above the store's own size
        hparams["work_size"] = min(int(hparams["work_size"]), options.size)
    if options.modality != "ct" and hparams.get("norm") == "window" and name == "unet":
        # an HU window means nothing on MR: let the store choose (z-score when MR is present)
        hparams.pop("norm")
        hparams.pop("window", None)
    return {"epochs": epochs, "device": options.device, "seed": SEED, "hparams": hparams, **plan}


def cpu_threads(requested: int | None) -> int:
    """Torch threads for CPU training.

    On a shared machine whose cores are already busy, multi-threaded torch collapses: each
    operator waits at a barrier for a thread that the OS has descheduled. Measured here (2
    cores, load ≈ 4): one U-Net step took 1.6-6.2 s with 2 threads and 0.14-0.21 s with 1.
    So: all cores unless other processes keep at least one core busy now, else one thread.
    """
    import os

    cores = os.cpu_count() or 1
    if requested is not None:
        return max(1, int(requested))
    return 1 if busy_cores() >= 0.75 else cores


def busy_cores(window_s: float = 1.0) -> float:
    """Cores kept busy by *other* processes over the next `window_s` (Linux: /proc/stat),
    else the 1-minute load average. Not the load average first: it counts this process's
    own earlier work (a test suite that calls the demo, pip just before) as competition."""
    import os
    import time

    def sample() -> tuple[float, float, float]:
        with open("/proc/stat") as f:
            ticks = [float(v) for v in f.readline().split()[1:]]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)  # idle + iowait
        own = sum(os.times()[:2])  # this process's user + system seconds
        return sum(ticks), idle, own

    try:
        hz = float(os.sysconf("SC_CLK_TCK"))
        total0, idle0, own0 = sample()
        time.sleep(window_s)
        total1, idle1, own1 = sample()
    except (OSError, ValueError, IndexError):
        try:
            return float(os.getloadavg()[0])
        except OSError:  # not available on this platform
            return 0.0
    elapsed = (total1 - total0) / hz / (os.cpu_count() or 1)  # wall seconds seen by /proc
    if elapsed <= 0:
        return 0.0
    busy = (total1 - total0 - (idle1 - idle0)) / hz - (own1 - own0)
    return max(0.0, busy / elapsed)


def _marker(out: Path, stage: str) -> Path:
    return out / STAGES_DIR / f"{stage}.json"


def _done(out: Path, stage: str, params: dict[str, Any], *paths: Path) -> bool:
    marker = _marker(out, stage)
    if not marker.exists() or not all(p.exists() for p in paths):
        return False
    try:
        return read_json(marker).get("params") == params
    except AmosegError:  # a broken marker means "not done"
        return False


def _finish(out: Path, stage: str, params: dict[str, Any], seconds: float) -> None:
    write_json(_marker(out, stage), {"params": params, "seconds": round(seconds, 2)})


def _clear(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _check_out(out: Path, fresh: bool) -> None:
    """Never delete or write into a folder that is not ours."""
    if out.exists() and not out.is_dir():
        raise AmosegError("--out is a file, expected a folder", out)
    if out.exists() and any(out.iterdir()) and not (out / STAGES_DIR).is_dir():
        raise AmosegError(
            "output folder exists and is not a demo folder", out, "choose another --out"
        )
    if fresh and out.exists():
        shutil.rmtree(out)


def run_demo(options: DemoOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; returns the comparison rows, paths and stage timings."""
    import torch

    from amoseg.data.synth import MODALITIES

    if options.modality not in MODALITIES:
        raise AmosegError(
            f"unknown --modality {options.modality!r}", None, f"use {', '.join(MODALITIES)}"
        )
    out = Path(options.out)
    _check_out(out, options.fresh)
    threads_before = torch.get_num_threads()
    try:
        return _run_stages(options, out, log)
    finally:
        torch.set_num_threads(threads_before)  # a Python caller's own setting, as it was


def _run_stages(options: DemoOptions, out: Path, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from amoseg.data.synth import generate_dataset
    from amoseg.models.registry import ladder_names
    from amoseg.reports.compare import compare_runs
    from amoseg.reports.evaluate import eval_dir, evaluate_run
    from amoseg.store.prepare import prepare_dataset
    from amoseg.training import TrainSettings, train

    (out / STAGES_DIR).mkdir(parents=True, exist_ok=True)
    timings: dict[str, dict[str, Any]] = {}
    chosen: list[int] = []  # torch threads of each stage that ran
    total_start = time.perf_counter()

    def stage(
        name: str, params: dict[str, Any], target: Path, work: Callable[[], None], done: Path
    ) -> None:
        """Run `work` into `target` unless the marker says it is done with these params."""
        if _done(out, name, params, done):
            # seconds = what the stage took when it ran
            timings[name] = {"seconds": read_json(_marker(out, name))["seconds"], "reused": True}
            log(f"[{name}] reused {target}")
            return
        _clear(target)
        # chosen again per stage: a machine that was busy at the start may be idle now
        n = cpu_threads(options.threads)
        if not chosen or n != chosen[-1]:
            log(f"[demo] {n} torch CPU thread(s)" + (" from here" if chosen else ""))
        torch.set_num_threads(n)
        chosen.append(n)
        log(f"[{name}] running → {target}")
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        _finish(out, name, params, seconds)
        timings[name] = {"seconds": round(seconds, 2), "reused": False, "threads": n}
        log(f"[{name}] done in {seconds:.1f} s")

    synth_params: dict[str, Any] = {"cases": options.cases, "seed": SEED, "preset": "demo"}
    if options.modality != "ct":  # CT demo folders of earlier versions stay reusable
        synth_params["modality"] = options.modality
    amos = out / AMOS_DIR
    stage(
        "synth",
        synth_params,
        amos,
        lambda: generate_dataset(
            amos,
            options.cases,
            SEED,
            "demo",
            progress=options.progress,
            modality=options.modality,
        ),
        amos / "dataset.json",
    )

    prep_params = {"synth": synth_params, "size": options.size, "keep": "organ", "seed": SEED}
    store = out / STORE_DIR
    stage(
        "prepare",
        prep_params,
        store,
        lambda: prepare_dataset(
            amos, store, size=options.size, keep="organ", seed=SEED, progress=options.progress
        ),
        store / "store.json",
    )

    run_dirs = []
    for name in ladder_names():
        settings = model_settings(name, options)
        run = out / RUNS_DIR / name
        params = {"store": prep_params, "model": name, "settings": settings}

        def work(name=name, run=run, settings=settings) -> None:
            train(name, store, run, TrainSettings(**settings, progress=options.progress))
            evaluate_run(run, store, "test", device=options.device, progress=options.progress)

        stage(f"run-{name}", params, run, work, eval_dir(run, "test") / "metrics.json")
        run_dirs.append(run)

    start = time.perf_counter()
    report = out / REPORT_DIR
    result = compare_runs(run_dirs, report)
    timings["compare"] = {"seconds": round(time.perf_counter() - start, 2), "reused": False}
    total = time.perf_counter() - total_start
    write_json(
        report / "timings.json",
        {
            "total_seconds": round(total, 2),
            "threads": chosen[0] if chosen else None,  # per stage: "stages"
            "stages": timings,
            "options": _jsonable(options),
        },
    )
    return {**result, "timings": timings, "total_seconds": total, "runs": run_dirs}


def _jsonable(options: DemoOptions) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(options).items()}
