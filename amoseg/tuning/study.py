"""Run one worker of a shared Optuna study until the study holds the wanted number of trials.

Any number of workers (processes on one machine, or machines) may run `run_study` with the same
storage URL and study name: Optuna's storage hands out unique trial numbers, and each worker
stops once `trials` trials are finished. A worker whose own work is done waits for the trials
still running elsewhere, so that if one of those workers dies its trial (marked FAILED through
the heartbeat) is replaced rather than silently missing from the study.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amoseg.errors import AmosegError
from amoseg.interrupts import nested, note_finished
from amoseg.tuning import search_space
from amoseg.tuning.storage import (
    SQLITE_COMPANIONS,
    open_storage,
    safe_url,
    sqlite_path,
    sqlite_url,
)

# A trial function trains with `params`, writes into `trial_dir`, calls `report(epoch, value)`
# once per epoch (which raises optuna.TrialPruned when the pruner says stop) and returns the
# value to maximise.
Report = Callable[[int, float], None]
TrialFn = Callable[[dict[str, Any], Path, Report], float]

METRICS = {"miou": "val_miou", "dice": "val_dice"}
PRUNERS = ("median", "hyperband", "none")
MAX_FAILURES_IN_A_ROW = 3


@dataclass
class TuneConfig:
    model: str
    out: Path
    trials: int = 20
    storage: str | None = None  # default: sqlite file OUT/study.db
    study_name: str | None = None  # default: amoseg-<model>
    epochs: int = 10
    metric: str = "miou"
    space: dict[str, dict[str, Any]] = field(default_factory=search_space.default_space)
    pruner: str = "median"
    seed: int | None = None
    timeout_s: float | None = None
    heartbeat_s: int = 30
    grace_s: int | None = None
    hparams: dict[str, Any] = field(default_factory=dict)  # model hyper-parameters, fixed

    @property
    def storage_url(self) -> str:
        return self.storage or sqlite_url(Path(self.out) / "study.db")

    @property
    def name(self) -> str:
        return self.study_name or f"amoseg-{self.model}"

    def validate(self) -> None:
        if self.trials < 1:
            raise AmosegError(f"--trials must be >= 1, got {self.trials}")
        if self.epochs < 1:
            raise AmosegError(f"--epochs must be >= 1, got {self.epochs}")
        if self.metric not in METRICS:
            raise AmosegError(f"unknown metric '{self.metric}'", hint="use miou or dice")
        if self.pruner not in PRUNERS:
            raise AmosegError(f"unknown pruner '{self.pruner}'", hint=f"use {'|'.join(PRUNERS)}")
        if self.timeout_s is not None and not (
            math.isfinite(self.timeout_s) and self.timeout_s > 0
        ):
            raise AmosegError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        if self.heartbeat_s < 1:
            raise AmosegError(f"heartbeat must be >= 1 second, got {self.heartbeat_s}")


def make_pruner(kind: str, epochs: int) -> Any:
    import optuna

    if kind == "median":
        # Compare from the second epoch on, once two trials have finished.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    return optuna.pruners.NopPruner()


def _study_attrs(config: TuneConfig) -> dict[str, Any]:
    return {
        "amoseg_space": search_space.canonical(config.space),
        "amoseg_metric": config.metric,
        "amoseg_model": config.model,
        "amoseg_epochs": config.epochs,
        "amoseg_hparams": json.dumps(config.hparams, sort_keys=True),
    }


def open_study(config: TuneConfig) -> Any:
    """Create or join the study; refuse to join one set up for another space/metric/model."""
    import optuna

    storage = open_storage(
        config.storage_url, heartbeat_s=config.heartbeat_s, grace_s=config.grace_s
    )
    sampler = optuna.samplers.TPESampler(seed=config.seed)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=config.name,
            direction="maximize",
            sampler=sampler,
            pruner=make_pruner(config.pruner, config.epochs),
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. an existing study with another direction
        raise AmosegError(
            f"cannot join study '{config.name}' ({exc})", hint="choose another --study name"
        ) from exc
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise AmosegError(
            f"study '{config.name}' in {safe_url(config.storage_url)} minimises; amoseg maximises",
            hint="choose another --study name",
        )
    wanted = _study_attrs(config)
    if not set(wanted) & set(study.user_attrs):
        for key, value in wanted.items():  # first worker: record the set-up; then verify
            study.set_user_attr(key, value)
    _check_attrs(config, study.user_attrs, wanted)
    return study


_ATTR_WHAT = {
    "amoseg_space": ("search space", "--space"),
    "amoseg_metric": ("metric", "--metric"),
    "amoseg_model": ("model", "MODEL"),
    "amoseg_epochs": ("number of epochs", "--epochs"),
    "amoseg_hparams": ("model hparams", "--hparams"),
}


def _check_attrs(config: TuneConfig, have: dict[str, Any], wanted: dict[str, Any]) -> None:
    for key, value in wanted.items():
        if key not in have or have[key] == value:
            continue
        what, option = _ATTR_WHAT[key]
        if key == "amoseg_space":
            theirs = search_space.describe(_decode_space(have[key]))
            detail = f"it searches: {theirs}"
        else:
            detail = f"it uses {have[key]}, not {value}"
        raise AmosegError(
            f"study '{config.name}' already exists with a different {what} ({detail})",
            hint=f"use the same {option} as its other workers, or a new --study name",
        )


def _decode_space(text: str) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return {}


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


SURPLUS_ATTR = "amoseg_surplus"


def is_surplus(trial: Any) -> bool:
    """A trial started after the study already had enough: stopped at once, not counted."""
    return bool(trial.user_attrs.get(SURPLUS_ATTR))


def _live_before(study: Any, number: int) -> int:
    """Trials numbered below `number` that count toward the total (not failed, not surplus)."""
    from optuna.trial import TrialState

    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.number < number and t.state != TrialState.FAIL and not is_surplus(t)
    )


def _tally(study: Any) -> tuple[int, int]:
    """(finished, in_flight): COMPLETE+PRUNED trials, and RUNNING+WAITING ones."""
    from optuna.trial import TrialState

    finished = in_flight = 0
    for t in study.get_trials(deepcopy=False):
        if is_surplus(t):
            continue
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            finished += 1
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            in_flight += 1
    return finished, in_flight


#: what a tune folder holds; a non-empty --out with none of these is someone else's folder.
TUNE_MARKERS = ("study.db", "trials", "best_params.json")


def storage_files(out: Path, storage_url: str | None) -> set[str]:
    """Names in `out` that belong to the study's own SQLite database (`--storage` inside
    `--out`): a second worker started at the same moment finds them before any marker."""
    db = sqlite_path(storage_url)
    if db is None or db.parent.resolve() != out.resolve():
        return set()
    return {db.name} | {db.name + suffix for suffix in SQLITE_COMPANIONS}


def check_tune_folder(out: Path, storage_url: str | None = None) -> None:
    """A rerun continues the study in its own folder; any other non-empty folder is refused,
    so a typo in --out never mixes trial folders into, say, a run or a dataset."""
    if out.exists() and not out.is_dir():
        raise AmosegError("--out is a file, expected a folder", out, "choose another --out")
    if not out.is_dir() or any((out / m).exists() for m in TUNE_MARKERS):
        return
    own = storage_files(out, storage_url)
    if any(not p.name.startswith(".") and p.name not in own for p in out.iterdir()):
        raise AmosegError(
            "output folder is not empty and is not a tune folder", out, "choose another --out"
        )


def run_study(
    config: TuneConfig,
    trial_fn: TrialFn,
    *,
    catch: tuple[type[Exception], ...] = (),
    log: Callable[[str], None] | None = None,
    poll_s: float | None = None,
) -> Any:
    """Run trials of the shared study until it has `config.trials` finished ones (or timeout).

    `catch` lists exceptions that fail one trial but not the worker (e.g. out of GPU memory at
    a large batch size). Returns the optuna Study.
    """
    import optuna

    config.validate()
    _quiet_optuna()
    say = log or (lambda _msg: None)
    check_tune_folder(Path(config.out), config.storage_url)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    study = open_study(config)
    metric_key = METRICS[config.metric]
    worker = f"{socket.gethostname()}:{os.getpid()}"
    deadline = None if config.timeout_s is None else time.monotonic() + config.timeout_s
    poll = poll_s if poll_s is not None else min(5.0, float(config.heartbeat_s))
    outcome: dict[str, Any] = {}  # the last trial and its error, shared with the callbacks

    def objective(trial: Any) -> float:
        # Two workers that both saw room for one more trial may start one each; the storage
        # numbers trials in creation order, so the later one sees the study full and stands
        # down before sampling (a trial without params does not feed the sampler's model).
        if _live_before(study, trial.number) >= config.trials:
            trial.set_user_attr(SURPLUS_ATTR, True)
            raise optuna.TrialPruned("surplus: the study already has enough trials")
        params = search_space.suggest(trial, config.space)
        trial_dir = Path(config.out) / "trials" / f"trial_{trial.number:04d}"
        if trial_dir.exists():  # left by another study in the same OUT: keep it, aside
            aside = trial_dir.with_name(f"{trial_dir.name}.old-{int(time.time())}")
            trial_dir.rename(aside)
            say(f"moved an earlier {trial_dir.name} aside to {aside.name}")
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("trial_dir", str(trial_dir))
        say(f"trial {trial.number} started on {worker}: {_fmt_params(params)}")

        def report(epoch: int, value: float) -> None:
            trial.report(float(value), step=int(epoch))
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric_key}={value:.4f} at epoch {epoch}")

        try:
            with nested():
                value = float(trial_fn(params, trial_dir, report))
        except catch as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"
            raise
        if not math.isfinite(value):
            raise ValueError(f"trial {trial.number}: {metric_key} is {value}")
        return value

    def remember(_study: Any, frozen: Any) -> None:
        outcome["trial"] = frozen

    failures = 0
    waiting_said = False
    while True:
        optuna.storages.fail_stale_trials(study)
        finished, in_flight = _tally(study)
        if finished >= config.trials:
            break
        if deadline is not None and time.monotonic() >= deadline:
            say(f"timeout reached: {finished}/{config.trials} trials finished")
            break
        if finished + in_flight >= config.trials:
            if not waiting_said:
                say(f"waiting for {in_flight} trial(s) running in other workers")
                waiting_said = True
            time.sleep(poll)
            continue
        waiting_said = False
        outcome.clear()
        study.optimize(
            objective, n_trials=1, catch=catch, callbacks=[remember], gc_after_trial=True
        )
        frozen = outcome.get("trial")
        if frozen is None or is_surplus(frozen):
            continue
        tally = _tally(study)
        say(_fmt_outcome(frozen, config.metric, *tally, config.trials))
        note_finished(
            f"tune: {tally[0]} of {config.trials} trials finished in study '{config.name}' "
            f"({safe_url(config.storage_url)}; the same command continues it)"
        )
        if frozen.state == optuna.trial.TrialState.FAIL:
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                raise AmosegError(
                    f"{failures} trials in a row failed in this worker "
                    f"(last: {outcome.get('error', 'see messages above')})",
                    hint="check the model and data with `amoseg train` first",
                )
        else:
            failures = 0
    return study


def _fmt_params(params: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )


def _fmt_outcome(frozen: Any, metric: str, finished: int, in_flight: int, total: int) -> str:
    state = frozen.state.name.lower()
    text = f"trial {frozen.number} {state}"
    if frozen.value is not None:
        text += f": {metric}={frozen.value:.4f}"
    elif frozen.intermediate_values:
        last = max(frozen.intermediate_values)
        text += f" at epoch {last}: {metric}={frozen.intermediate_values[last]:.4f}"
    return text + f" [{finished}/{total} finished, {in_flight} running]"
