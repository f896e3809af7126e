"""What a tuning run leaves behind: best_params.json, a top-trials table, a history plot.

best_params.json is the hand-over to `amoseg train --params`: the searched settings (lr,
weight_decay, batch_size, patch_size when searched, model hyper-parameters under "hparams")
plus where they came from (value, metric, trial number).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from amoseg.atomic import write_json
from amoseg.errors import AmosegError
from amoseg.render.figures import save_png
from amoseg.tuning import search_space
from amoseg.tuning.study import is_surplus


def best_params(study: Any, space: dict[str, dict[str, Any]], metric: str) -> dict[str, Any]:
    """The best completed trial: {lr, weight_decay, batch_size, [patch_size], [hparams], value,
    metric, trial}."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        raise AmosegError(
            f"no trial of study '{study.study_name}' has completed yet",
            hint="see the trial messages above; run more --trials or a longer --timeout",
        )
    best = max(done, key=lambda t: (t.value, -t.number))
    params = search_space.full_params(space, best.params)
    params["batch_size"] = int(params["batch_size"])
    if params.get("patch_size") is not None:  # "128x128x64" → [128, 128, 64]
        params["patch_size"] = list(search_space.patch_size_of(params))  # type: ignore[arg-type]
    searched = search_space.hparams_of(params)
    params = {k: v for k, v in params.items() if k not in searched}
    if searched:  # `amoseg train --params` reads model hyper-parameters from "hparams"
        params["hparams"] = searched
    return {**params, "value": float(best.value), "metric": metric, "trial": int(best.number)}


def write_best_params(out: Path, best: dict[str, Any]) -> Path:
    target = Path(out) / "best_params.json"
    write_json(target, best)
    return target


def trials_table(study: Any, metric: str, top: int = 10) -> Any:
    """A rich Table of the best `top` trials (completed first by value, then pruned)."""
    from optuna.trial import TrialState
    from rich.table import Table

    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not is_surplus(t)
    ]

    def score(t: Any) -> tuple[int, float]:
        if t.state == TrialState.COMPLETE:
            return (1, t.value)
        return (0, _last_value(t))

    trials.sort(key=score, reverse=True)
    counts = {s: 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        if not is_surplus(t):
            counts[t.state] += 1
    caption = ", ".join(f"{n} {s.name.lower()}" for s, n in counts.items() if n)
    table = Table(title=f"study '{study.study_name}': top trials by {metric}", caption=caption)
    for col in ("trial", "state", metric, "lr", "weight decay", "batch", "epochs", "minutes"):
        table.add_column(col, justify="right" if col not in ("state",) else "left")
    for t in trials[:top]:
        value = t.value if t.state == TrialState.COMPLETE else _last_value(t)
        minutes = (
            f"{(t.datetime_complete - t.datetime_start).total_seconds() / 60:.1f}"
            if t.datetime_complete and t.datetime_start
            else "-"
        )
        table.add_row(
            str(t.number),
            t.state.name.lower(),
            "-" if math.isnan(value) else f"{value:.4f}",
            _fmt(t.params.get("lr")),
            _fmt(t.params.get("weight_decay")),
            str(t.params.get("batch_size", "-")),
            str(len(t.intermediate_values)),
            minutes,
        )
    return table


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.2e}"


def _last_value(trial: Any) -> float:
    if not trial.intermediate_values:
        return float("nan")
    return float(trial.intermediate_values[max(trial.intermediate_values)])


def plot_history(study: Any, target: Path, metric: str) -> Path:
    """Optimisation history: each trial's value, pruned trials' last value, best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    done = [(t.number, t.value) for t in trials if t.state == TrialState.COMPLETE]
    pruned = [
        (t.number, _last_value(t))
        for t in trials
        if t.state == TrialState.PRUNED and t.intermediate_values and not is_surplus(t)
    ]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if done:
        xs, ys = zip(*done, strict=True)
        ax.scatter(xs, ys, color="tab:blue", label="completed", zorder=3)
        best, steps = -math.inf, []
        for y in ys:
            best = max(best, y)
            steps.append(best)
        ax.step(xs, steps, where="post", color="tab:red", label="best so far")
    if pruned:
        xs, ys = zip(*pruned, strict=True)
        ax.scatter(xs, ys, color="grey", marker="x", label="pruned (last epoch)", zorder=2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation " + {"miou": "mIoU", "dice": "mean organ Dice"}.get(metric, metric))
    ax.set_title(f"optimisation history: {study.study_name}")
    ax.grid(alpha=0.3)
    if done or pruned:
        ax.legend(loc="lower right")
    fig.tight_layout()
    return save_png(fig, target)
