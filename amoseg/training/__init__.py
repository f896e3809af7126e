"""Training: `train` a registered model on a prepared store into a run folder; `load_run`.

Run folder layout::

    RUNDIR/config.json             {"model", "hparams", "settings",
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
    from amoseg.data.slice_store import SliceStore
    from amoseg.data.splits import select_fold

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


def _run_settings(
    out: Path, config: dict[str, Any], settings: TrainSettings, resume: bool
) -> TrainSettings:
    """Check the run folder against this call; on resume, the saved settings win except the
    ones that do not change the maths (epochs, device, workers, ...)."""
    from amoseg.atomic import read_json

    saved_path = out / "config.json"
    saved = read_json(saved_path, "run config.json") if saved_path.exists() else None
    if resume:
        if saved is None:  # never started here (a run killed in epoch 1 has config.json)
            raise AmosegError(
                "nothing to resume: no checkpoint_latest.pt",
                out,
                "run without --resume to start training",
            )
        if saved["model"] != config["model"] or saved["hparams"] != config["hparams"]:
            raise AmosegError(
                f"cannot resume: the run folder holds model '{saved['model']}' with "
                f"hparams {saved['hparams']}",
                out,
                "resume with the same model and hyper-parameters, or choose another --out",
            )
        keep = {k: v for k, v in saved["settings"].items() if k not in RESUMABLE_OVERRIDES}
        return TrainSettings.from_dict({**config["settings"], **keep}, settings.hparams)
    if saved is not None:

        def same(a: dict, b: dict) -> bool:
            strip = {"epochs", *RESUMABLE_OVERRIDES}
            sa = {k: v for k, v in a["settings"].items() if k not in strip}
            sb = {k: v for k, v in b["settings"].items() if k not in strip}
            return a["model"] == b["model"] and a["hparams"] == b["hparams"] and sa == sb

        if not same(saved, config):
            raise AmosegError(
                f"run folder already holds a different run (model '{saved['model']}')",
                out,
                "pass --resume to continue it, or choose another --out",
            )
    return settings


def train(
    model_name: str,
    data: Path,
    out: Path,
    settings: TrainSettings | None = None,
    *,
    resume: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
    """Train `model_name` on the store at `data`, writing the run folder `out`.

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
    settings = (settings or TrainSettings()).resolved(cls.TRAIN_DEFAULTS)
    if settings.epochs < 1:
        raise AmosegError("epochs must be at least 1", hint="pass --epochs 1 or more")
    out = Path(out)
    store = _open_store(Path(data), settings.fold)
    hparams = dict(settings.hparams)
    hparams.update(cls.store_hparams(store, hparams))
    size = store.info.get("size")  # None for a planned store: each case has its own planes
    cls(input_size=size, **hparams)  # reject unknown hparams before touching `out`
    config = _plain(
        {
            "model": model_name,
            "hparams": hparams,
            "settings": settings.to_dict(),
            "store": {
                "path": str(store.root.resolve()),
                "size": size,
                # planned stores: what predict must do to a new scan (amoseg.planning)
                "configuration": str(store.info.get("configuration", "seed")),
                "plan": store.info.get("plan"),
                "modality": store.info.get("modality"),
                # trained on amoseg phantoms: predict warns that real-scan output is not meaningful
                "synthetic": bool(store.info.get("synthetic", False)),
                # split lists hash, configuration, size: resume/evaluate refuse another store
                "identity": store.identity(),
            },
        }
    )
    opened_fold = settings.fold
    if resume and (out / "config.json").exists():
        from amoseg.atomic import read_json
        from amoseg.data.store import check_identity

        saved_store = read_json(out / "config.json", "run config.json").get("store") or {}
        check_identity(saved_store.get("identity"), store.identity(), store.root)
    settings = _run_settings(out, config, settings, resume)
    if settings.fold != opened_fold:  # resumed: the run's own fold wins
        store = _open_store(Path(data), settings.fold)
    if resume and not (out / "checkpoint_latest.pt").exists():
        resume = False  # killed during its first epoch: start over, losing only that epoch
    config["settings"] = _plain(settings.to_dict())
    ctx = distributed.init_from_env(settings.device)
    try:
        if ctx.is_main:
            write_json(out / "config.json", config)
        distributed.barrier(ctx)
        torch.manual_seed(settings.seed)
        np.random.seed(settings.seed % 2**32)
        random.seed(settings.seed)
        model = cls(input_size=size, **hparams)
        summary = trainer.fit(
            model, store, settings, out, resume=resume, on_epoch=on_epoch, dist=ctx, config=config
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
