"""Training: `train` a registered model on a prepared store into a run folder; `load_run`.

Run folder layout::

    RUNDIR/config.json             {"model", "hparams", "settings", "precision",
                                    "store": {"path", "size", "synthetic", "identity"}}
    RUNDIR/checkpoint_latest.pt    full training state (model, optimiser, scheduler, RNG, ...)
    RUNDIR/checkpoint_best.pt      model state at the best validation mIoU
    RUNDIR/log.csv                 one row per epoch
    RUNDIR/summary.json            what `train` returns
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amoseg.errors import AmosegError
from amoseg.training.settings import RESUMABLE_OVERRIDES, TrainSettings

__all__ = ["TrainSettings", "load_run", "train"]


def _plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _open_store(data: Path, fold: int | str | None = None) -> Any:
    from amoseg.store.slice_store import SliceStore
    from amoseg.store.splits import select_fold

    store = SliceStore(data)
    try:
        store.splits.update(select_fold(store.splits, fold))
    except AmosegError as exc:
        raise AmosegError(exc.what, Path(data) / "splits.json", exc.hint) from exc
    store.check_no_leakage()
    if not store.cases("train"):
        raise AmosegError(
            "the store has no training cases", Path(data) / "splits.json", "re-run `amoseg prepare`"
        )
    return store


def recipe_patch_size(model_cls: type, hparams: dict[str, Any]) -> Any:
    """The patch size a recipe's hyper-parameters set themselves (None: the store's)."""
    return model_cls.upgrade_hparams(hparams).get("patch_size")


def use_patch_size(store: Any, model_cls: type, settings: TrainSettings) -> None:
    """`settings.patch_size` replaces the store configuration's patch size for this run (every
    reader of `store.configuration` sees it: the patch sampler, the model's store hparams, the
    memory check); a seed store or a size of the wrong dimensionality is one line (also
    `tune`'s up-front check of a space's patch_size choices)."""
    from amoseg.training.settings import format_patch_size

    patch = settings.patch_size
    if patch is None:
        return
    text, config = format_patch_size(patch), store.configuration
    if store.size is not None:
        raise AmosegError(
            f"--patch-size {text}: the store holds the '{config.name}' configuration (fixed "
            "S×S slices), which has no patches",
            store.root,
            "drop --patch-size, or prepare a planned store (--configuration 2d or 3d)",
        )
    if len(patch) != config.dims:
        raise AmosegError(
            f"--patch-size {text} has {len(patch)} sizes, but the store's '{config.name}' "
            f"configuration has {config.dims}D patches ("
            f"{format_patch_size(config.patch_size)})",
            store.root,
            "give XxY for a 2d store, XxYxZ for a 3d store",
        )
    model_dims = int(model_cls.dims)
    if model_dims != config.dims:
        raise AmosegError(
            f"--patch-size {text}: {model_cls.name} trains {model_dims}D patches, the store's "
            f"'{config.name}' configuration has {config.dims}D ones",
            store.root,
            f"train {model_cls.name} on a {model_dims}d store to set its patch size",
        )
    if recipe_patch_size(model_cls, settings.hparams):
        raise AmosegError(
            "--patch-size and hparams patch_size both set the patch size", hint="give one of them"
        )
    store.overrides["patch_size"] = tuple(patch)


def configuration_defaults(store: Any, cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a planned configuration (2d, 3d, ...) decides for a run of its own network
    (plan.json `network.class`): the batch size, the network's arguments and, for 2.5D
    recipes, the context — as (settings defaults, hyper-parameters); explicit settings and
    hparams still win. The seed configuration, and other recipes trained on a planned store,
    keep each recipe's own defaults (the report's ladder was tuned that way)."""
    if store.size is not None:
        return {}, {}
    config = store.configuration
    if config.network.name != cls.name:
        return {}, {}
    return {"batch_size": config.batch_size}, cls.configured_params(
        config, store.root / "store.json"
    )


#: what a run folder holds that `train --overwrite` may remove (anything else is kept).
RUN_FILES = ("config.json", "checkpoint_latest.pt", "checkpoint_best.pt", "log.csv",
             "summary.json", "model.onnx", "progress.png", "val_native.csv")  # fmt: skip
RUN_FOLDERS = ("tensorboard", "eval_train", "eval_val", "eval_test", "previous")


def _visible_entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _clear_run(out: Path) -> None:
    """`--overwrite`: remove the previous run's files (rank 0 only under torchrun)."""
    import os
    import shutil

    if int(os.environ.get("RANK", "0")) != 0:
        return
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        shutil.rmtree(out / name, ignore_errors=True)


def _check_fresh_run_folder(out: Path, saved: dict[str, Any] | None, overwrite: bool) -> None:
    """A run folder that already holds something is never trained over silently: that would
    replace its checkpoints. `--resume` continues it; `--overwrite` starts over."""
    if out.exists() and not out.is_dir():
        raise AmosegError("--out is a file, expected a run folder", out, "choose another --out")
    if not _visible_entries(out):
        return
    if saved is None:
        raise AmosegError(
            "run folder is not empty and holds no amoseg run (no config.json)",
            out,
            "choose a new or empty --out",
        )
    if overwrite:
        _clear_run(out)
        return
    raise AmosegError(
        f"run folder already holds a run (model '{saved.get('model')}')",
        out,
        "pass --resume to continue it, --overwrite to start over (deletes its checkpoints), "
        "or choose another --out",
    )


def _saved_config(out: Path) -> dict[str, Any] | None:
    """The run folder's config.json, or None when it has none."""
    from amoseg.atomic import read_json

    saved_path = out / "config.json"
    saved = read_json(saved_path, "run config.json") if saved_path.exists() else None
    if saved is not None and not isinstance(saved, dict):
        raise AmosegError("run config.json is not a JSON object", saved_path, "fix or remove it")
    return saved


def _same_model(saved: dict[str, Any], config: dict[str, Any]) -> bool:
    """The same recipe with the same parameters (runs saved before config.json recorded the
    defaults too compare equal to their defaulted form)."""
    if saved.get("model") != config["model"] or not isinstance(saved.get("hparams"), dict):
        return False
    from amoseg.models.registry import model_class

    cls = model_class(config["model"])
    try:
        return cls.check_params(saved["hparams"]) == cls.check_params(config["hparams"])
    except AmosegError:
        return False


def _resumed_settings(out: Path, saved: dict[str, Any], settings: TrainSettings) -> TrainSettings:
    """The saved settings win, except the ones that do not change the maths (epochs, device,
    workers, ...). Runs saved before `patch_size` existed trained on the plan's own, before
    `validation` existed on whole volumes."""
    if not isinstance(saved.get("settings"), dict):
        raise AmosegError(
            "run config.json has no settings", out / "config.json", "retrain without --resume"
        )
    keep = {k: v for k, v in saved["settings"].items() if k not in RESUMABLE_OVERRIDES}
    keep.setdefault("validation", "volumes")  # runs saved before patch validation existed
    return TrainSettings.from_dict(
        {**settings.to_dict(), "patch_size": None, **keep}, settings.hparams
    )


def _run_settings(
    out: Path,
    config: dict[str, Any],
    settings: TrainSettings,
    resume: bool,
    overwrite: bool = False,
) -> TrainSettings:
    """Check the run folder against this call; on resume, the saved settings win except the
    ones that do not change the maths (epochs, device, workers, ...)."""
    saved = _saved_config(out)
    if resume and overwrite:
        raise AmosegError("--resume and --overwrite exclude each other", out, "pass one of them")
    if not resume:
        _check_fresh_run_folder(out, saved, overwrite)
        return settings
    if saved is None:  # never started here (a run killed in epoch 1 has config.json)
        raise AmosegError(
            "nothing to resume: no checkpoint_latest.pt",
            out,
            "run without --resume to start training",
        )
    if not _same_model(saved, config):
        raise AmosegError(
            f"cannot resume: the run folder holds model '{saved.get('model')}' with "
            f"hparams {saved.get('hparams')}",
            out,
            "resume with the same model and hyper-parameters, or choose another --out",
        )
    return _resumed_settings(out, saved, settings)


def train(
    model_name: str,
    data: Path,
    out: Path,
    settings: TrainSettings | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    scorer: Any = None,
) -> dict[str, Any]:
    """Train `model_name` on the store at `data`, writing the run folder `out`.

    `scorer` (`amoseg.training.trainer.NativeScorer`, e.g.
    `amoseg.reports.evaluate.ValidationScorer()`, which `amoseg train` passes): a
    patch-validated run is also scored on the validation scans' own grids, every
    `val_native_minutes` and by `evaluate` at the end; without one it is not.

    A non-empty `out` is refused unless `resume` (continue it) or `overwrite` (start over).
    Works unchanged under torchrun (DDP: rank 0 writes, all ranks validate a shard).
    Returns the summary: last epoch's epoch/train_loss/val_miou/val_dice/val_acc plus
    best_val_miou, best_epoch, train_seconds, n_params.
    """
    import numpy as np
    import torch

    from amoseg.atomic import write_json
    from amoseg.models.registry import model_class
    from amoseg.training import distributed, trainer

    cls = model_class(model_name)
    settings = settings or TrainSettings()
    if settings.epochs < 1:
        raise AmosegError("epochs must be at least 1", hint="pass --epochs 1 or more")
    out = Path(out)
    saved = _saved_config(out) if resume and not overwrite else None
    if saved is not None:  # the run's own settings decide what is read (fold) and the shapes
        settings = _resumed_settings(out, saved, settings)
    store = _open_store(Path(data), settings.fold)
    use_patch_size(store, cls, settings)
    # explicit settings first, then the planned configuration, then the recipe's defaults
    planned_settings, planned_hparams = configuration_defaults(store, cls)
    settings = settings.resolved({**cls.TRAIN_DEFAULTS, **planned_settings})
    # checked against the recipe's Params; recorded with its defaults (the run says it all)
    hparams = cls.check_params({**planned_hparams, **settings.hparams}).to_dict()
    hparams.update(cls.store_hparams(store, hparams))
    size = store.info.get("size")  # None for a planned store: each case has its own planes
    # reject unknown hparams, and a network too large for this machine's memory, before
    # touching `out` (measured on the meta device: nothing is allocated)
    from amoseg.devices import resolve_device
    from amoseg.preprocessing.geometry import array_order
    from amoseg.training.memory import check_fits

    # what one training sample spans, in array order: a 3D model's own patch, else a planned
    # store's configuration patch (with --patch-size applied); both (x, y[, z])
    patch = hparams.get("patch_size") or (store.configuration.patch_size if not size else None)
    spatial = array_order(patch) if patch else None
    if size or spatial:
        estimate = check_fits(cls, size, hparams, int(settings.batch_size or 1),
                              resolve_device(settings.device), spatial)  # fmt: skip
    else:
        estimate = None
    if estimate is None:
        cls(input_size=size, **hparams)
    from amoseg.models.torch_model import trains_bf16

    bf16 = trains_bf16(settings.precision, resolve_device(settings.device), cls.fast_gpu)
    config = _plain(
        {
            "model": model_name,
            "hparams": hparams,
            "settings": settings.to_dict(),
            # what --precision resolved to on this machine (auto: by the recipe and the CPU/GPU)
            "precision": "bf16" if bf16 and cls.gradient_trained else "fp32",
            "store": {
                "path": str(store.root.resolve()),
                "size": size,
                # planned stores: what predict must do to a new scan (amoseg.planning)
                "configuration": str(store.info.get("configuration", "seed")),
                # the configuration as trained: the plan's, with this run's overrides merged
                "plan": store.configuration.to_dict() if store.info.get("plan") else None,
                "modality": store.info.get("modality"),
                # trained on amoseg phantoms: predict warns that real-scan output is not meaningful
                "synthetic": bool(store.info.get("synthetic", False)),
                # split lists hash, configuration, size: resume/evaluate refuse another store
                "identity": store.identity(),
                # a cascade stage: the fold runs that made its inputs (copied to RUN/previous)
                "previous_stage": store.previous_stage,
            },
        }
    )
    if resume and (out / "config.json").exists():
        from amoseg.atomic import read_json
        from amoseg.store.store import check_identity

        saved_store = read_json(out / "config.json", "run config.json").get("store") or {}
        check_identity(saved_store.get("identity"), store.identity(), store.root)
    settings = _run_settings(out, config, settings, resume, overwrite)
    if resume and not (out / "checkpoint_latest.pt").exists():
        resume = False  # killed during its first epoch: start over, losing only that epoch
    config["settings"] = _plain(settings.to_dict())
    ctx = distributed.init_from_env(settings.device)
    try:
        if ctx.is_main:
            write_json(out / "config.json", config)
            if store.previous_stage is not None:  # the run carries both stages
                from amoseg.store.cascade import copy_previous

                copy_previous(store.previous_stage, out)
        distributed.barrier(ctx)
        torch.manual_seed(settings.seed)
        np.random.seed(settings.seed % 2**32)
        random.seed(settings.seed)
        model = cls(input_size=size, **hparams)
        summary = trainer.fit(
            model,
            store,
            settings,
            out,
            resume=resume,
            on_epoch=on_epoch,
            dist=ctx,
            config=config,
            scorer=scorer,
        )
        # all ranks leave together: a rank tearing gloo down while another still writes its
        # summary can abort ("terminate called without an active exception")
        distributed.barrier(ctx)
        return summary
    finally:
        distributed.close(ctx)


def load_run(run_dir: Path, device: str = "auto", which: str = "best") -> Any:
    """The trained model of a run folder (checkpoint_best.pt by default, or 'latest')."""
    from amoseg.models.registry import load_model

    if which not in ("best", "latest"):
        raise AmosegError(f"unknown checkpoint '{which}'", hint="use best or latest")
    path = Path(run_dir) / f"checkpoint_{which}.pt"
    if not path.exists():
        raise AmosegError(
            f"no checkpoint_{which}.pt in the run folder",
            run_dir,
            "train a model into it first: amoseg train MODEL --out RUNDIR",
        )
    return load_model(path, device)
