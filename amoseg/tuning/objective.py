"""The real trial function: train a model with the trial's parameters, report each epoch.

The value a trial returns is the best validation metric over its epochs, the same quantity
the run's best checkpoint is chosen by, so `amoseg train --params best_params.json` aims at
what tuning measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from amoseg.tuning.study import METRICS, Report, TrialFn


def training_objective(
    model: str,
    data: Path,
    *,
    epochs: int,
    metric: str = "miou",
    device: str = "auto",
    seed: int = 0,
    hparams: dict[str, Any] | None = None,
    max_slices_per_epoch: int | None = None,
    patch_sizes: Sequence[tuple[int, ...]] = (),
    time_budget: float | None = None,
) -> TrialFn:
    """A TrialFn around `amoseg.training.train`; checks the store once, up front, and that it
    and the model can use every patch size the space may give a trial (`patch_sizes`)."""
    from amoseg.errors import AmosegError
    from amoseg.models.registry import train_defaults
    from amoseg.store.slice_store import SliceStore
    from amoseg.training import TrainSettings

    if "lr" not in train_defaults(model):  # also rejects unknown model names
        raise AmosegError(
            f"model '{model}' has no optimiser to tune",
            hint="tune a trained model: logreg-*, mlp, unet-seed or unet",
        )
    store = SliceStore(data)  # AmosegError now rather than in every trial
    store.check_no_leakage()
    if not store.cases("train") or not store.cases("val"):
        raise AmosegError(
            "tuning needs training and validation cases in the store",
            Path(data) / "splits.json",
            "re-run `amoseg prepare` with a validation split",
        )
    for patch in patch_sizes:
        from amoseg.models.registry import model_class
        from amoseg.training import use_patch_size

        try:
            wanted = TrainSettings(patch_size=patch, hparams=dict(hparams or {}))
            use_patch_size(store, model_class(model), wanted)
        except AmosegError as exc:
            raise AmosegError(f"search space patch_size: {exc.what}", exc.path, exc.hint) from exc
        finally:
            store.overrides.clear()  # a check only: each trial opens its own store
    if time_budget is not None:  # one line now, not a failure in every trial
        TrainSettings(time_budget=time_budget)
    key = METRICS[metric]

    def run_trial(params: dict[str, Any], trial_dir: Path, report: Report) -> float:
        from amoseg.training import TrainSettings, train
        from amoseg.tuning.search_space import hparams_of, patch_size_of

        settings = TrainSettings(
            epochs=epochs,
            batch_size=int(params["batch_size"]),
            lr=float(params["lr"]),
            weight_decay=float(params["weight_decay"]),
            device=device,
            seed=seed,
            hparams={**(hparams or {}), **hparams_of(params)},  # searched ones win
            max_slices_per_epoch=max_slices_per_epoch,
            patch_size=patch_size_of(params),
            # a trial's budget: minutes instead of epochs, the LR schedule planned over them
            time_budget=time_budget,
            val_native_end=False,  # trials compare on the per-epoch metric only
        )
        seen: list[float] = []

        def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
            value = float(metrics[key])
            seen.append(value)
            report(epoch, value)  # may raise optuna.TrialPruned: train lets it through

        summary = train(model, Path(data), Path(trial_dir), settings, on_epoch=on_epoch)
        if seen:
            return max(seen)
        return float(summary["best_val_miou"] if metric == "miou" else summary[key])

    return run_trial
