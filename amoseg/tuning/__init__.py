"""Hyper-parameter tuning with Optuna: search space, shared study storage, trial runner.

Heavy imports (optuna, torch) happen inside functions so `import amoseg.tuning` stays cheap.
"""

from __future__ import annotations

from amoseg.tuning.search_space import DEFAULT_SPACE, PARAM_NAMES, load_space, suggest
from amoseg.tuning.storage import open_storage, sqlite_url
from amoseg.tuning.study import METRICS, PRUNERS, TrialFn, TuneConfig, open_study, run_study
from amoseg.tuning.summary import best_params, plot_history, trials_table, write_best_params

__all__ = [
    "DEFAULT_SPACE",
    "METRICS",
    "PARAM_NAMES",
    "PRUNERS",
    "TrialFn",
    "TuneConfig",
    "best_params",
    "load_space",
    "open_storage",
    "open_study",
    "plot_history",
    "run_study",
    "sqlite_url",
    "suggest",
    "trials_table",
    "write_best_params",
]
