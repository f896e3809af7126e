"""The one training loop for every model, plus per-epoch bookkeeping.

The trainer owns the loop; a model only supplies hooks (`net`, `loss`, `make_optimizer`,
`lr_lambda`, `augment`, `crop_batch`, or `fit_statistics` for the one-pass prior) and never
imports this module.

Per epoch: stream shuffled slices (optionally capped) → crop to the body box (models that
predict on it) → normalise → augment → forward (bf16 autocast + channels_last where
`--precision` resolves to it: GPU, or CPU with AMX / AVX512-BF16, for the modern recipes) → loss →
step; the loss is summed on the device and read once per epoch (no host sync per step).
Then every rank validates its shard of the val volumes (the model's predictor through its
inferer, the same path as `evaluate` and `predict`) into one confusion matrix, all-reduced,
→ val mIoU / Dice / accuracy — or, with patch validation (`amoseg.training.validation`, the
default on planned stores), its share of a fixed set of validation patches → nnU-Net's
pseudo-Dice, and `evaluate` on the val split once training ends; rank 0 writes
checkpoint_best.pt (on a new best val mIoU), checkpoint_latest.pt (full training state),
log.csv, progress.png, and calls `on_epoch`.

Resume is exact by construction: batch order depends only on (seed, epoch), augmentation
draws from a generator seeded by (seed, epoch, rank), and the checkpoint restores weights,
optimiser and scheduler state.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch

from amoseg.atomic import write_json, write_text
from amoseg.devices import resolve_device
from amoseg.errors import AmosegError
from amoseg.interrupts import note_finished
from amoseg.metrics.confusion import ConfusionMatrix, mean_dice, mean_iou, pixel_accuracy
from amoseg.models.checkpoint import MISMATCH_ERRORS, load_checkpoint, save_checkpoint
from amoseg.ops.inferers import as_volume, model_volume_labels
from amoseg.progress import progress_bar
from amoseg.training import distributed
from amoseg.training.checkpoint import rng_state, set_rng_state
from amoseg.training.data import EpochSampler, make_loader, training_dataset

#: log.csv columns; `seconds` is the whole epoch, `val_seconds` the validation pass within it,
#: `val_on` what val_miou/val_dice/val_acc were computed on (patches or volumes),
#: `val_pseudo_dice` nnU-Net's pseudo-Dice on validation patches (empty with volumes),
#: `minutes` the run's training clock at the epoch's end
LOG_FIELDS = ("epoch", "train_loss", "val_miou", "val_dice", "val_acc", "lr", "val_seconds",
              "seconds", "val_pseudo_dice", "val_on", "minutes")  # fmt: skip
#: the most epochs a time-budget run may take (the budget ends it long before)
MAX_EPOCHS = 100_000
#: under --time-budget an epoch lasts at most this share of the budget: the first epoch stops
#: its steps there and later epochs take as many (nnU-Net's 250 iterations per epoch are the
#: same idea). Without it one epoch of a large store can outlast the whole budget on a CPU,
#: and the LR plan, the marks and "within one epoch of the budget" would mean nothing.
BUDGET_EPOCH_SHARE = 0.1
#: set to a folder to make every rank write a hash of its final weights there (DDP tests).
DUMP_ENV = "AMOSEG_DUMP_WEIGHTS_HASH"


def validate(model: Any, store: Any, cases: list[str], batch_size: int = 16) -> ConfusionMatrix:
    """Confusion matrix of `model` over whole stored volumes (its predictor through its
    inferer, as `evaluate` and `predict` run it), on the model's device; the matrix stays
    there (callers all-reduce, then read it once)."""
    device = getattr(model, "device", "cpu")
    cm = ConfusionMatrix(device=device)
    inferer = model.inferer(batch_size)
    for case in cases:
        pred = model_volume_labels(model, inferer, as_volume(store.image(case), device))
        cm.update(pred, as_volume(store.label(case), pred.device))
    return cm


def metrics_of(cm: ConfusionMatrix) -> dict[str, float]:
    m = cm.matrix
    return {"val_miou": mean_iou(m), "val_dice": mean_dice(m), "val_acc": pixel_accuracy(m)}


def state_hash(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class EpochReporter:
    """Validation, logging, checkpoints and the on_epoch callback, shared by all models."""

    def __init__(
        self,
        model: Any,
        store: Any,
        settings: Any,
        run_dir: Path,
        *,
        resume: bool = False,
        on_epoch: Callable[[int, dict], None] | None = None,
        dist: distributed.DistContext | None = None,
        config: dict[str, Any] | None = None,
    ):
        self.model, self.store, self.settings, self.run_dir = model, store, settings, run_dir
        self.on_epoch = on_epoch
        self.dist = dist or distributed.DistContext(device=model.device)
        self.config = config or {}
        self.history: list[dict[str, Any]] = []
        self.best = -math.inf
        self.best_epoch = 0
        self.train_seconds = 0.0
        self.val_seconds = 0.0
        self._tb: Any = None
        val = store.cases("val")
        if not val:
            raise AmosegError(
                "the store has no validation cases",
                store.root / "splits.json",
                "re-run `amoseg prepare` with a non-zero validation fraction",
            )
        cap = getattr(settings, "val_cases", None)
        val = val[:cap] if cap else val
        self.val_shard = val[self.dist.rank :: self.dist.world]
        #: per-epoch validation on patches instead of whole volumes (set by `fit_torch`)
        self.patch_val: Any = None
        self.lr_end = math.nan

    def validate(self) -> dict[str, Any]:
        start = time.perf_counter()
        if self.patch_val is not None:
            score = self.patch_val.run(self.model)
            metrics: dict[str, Any] = {**score.metrics(), "val_on": "patches"}
            metrics["val_pseudo_dice"] = metrics["val_dice"]
        else:
            cm = validate(self.model, self.store, self.val_shard, self.settings.val_batch_size)
            cm.all_reduce()
            metrics = {**metrics_of(cm), "val_pseudo_dice": math.nan, "val_on": "volumes"}
        self.val_seconds = time.perf_counter() - start
        return metrics

    def record(
        self,
        epoch: int,
        train_loss: float,
        lr: float,
        seconds: float,
        metrics: dict[str, float],
        training_state: dict[str, Any] | None,
    ) -> dict:
        """Write best/latest checkpoints and log.csv (rank 0), then call on_epoch."""
        self.train_seconds += seconds
        row = {"epoch": epoch, "train_loss": train_loss, **metrics, "lr": lr,
               "val_seconds": round(self.val_seconds, 3), "seconds": seconds,
               "minutes": round(self.train_seconds / 60, 4)}  # fmt: skip
        self.history.append(row)
        improved = metrics["val_miou"] > self.best or self.best_epoch == 0
        if improved:
            self.best, self.best_epoch = metrics["val_miou"], epoch
        if self.dist.is_main:
            base = self.model.checkpoint_payload()
            meta = {"epoch": epoch, "metrics": row, "config": self.config}
            if improved:
                save_checkpoint({**base, **meta}, self.run_dir / "checkpoint_best.pt")
            save_checkpoint(
                {
                    **base,
                    **meta,
                    **(training_state or {}),
                    "history": self.history,
                    "best": self.best,
                    "best_epoch": self.best_epoch,
                    "train_seconds": self.train_seconds,
                    "rng": rng_state(),
                },
                self.run_dir / "checkpoint_latest.pt",
            )
            # the interrupt note names what is on disk from the moment it is there (the log
            # and the figure below are extras: an interrupt while drawing keeps the epoch)
            note_saved(self.run_dir, epoch, self.settings.epochs)
            self.write_log()
            self.write_progress()
            self.write_tensorboard(row)
        if self.on_epoch is not None and self.dist.is_main:
            self.on_epoch(epoch, {k: row[k] for k in LOG_FIELDS[:5]})
        return row

    def restore(self, ckpt: dict[str, Any]) -> None:
        self.history = list(ckpt.get("history", []))
        self.best = float(ckpt.get("best", -math.inf))
        self.best_epoch = int(ckpt.get("best_epoch", 0))
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))

    def write_log(self) -> None:
        """log.csv rewritten whole from the history each epoch, so it always matches the
        latest checkpoint (a crash between the two can not leave an extra row)."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=LOG_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.history)
        write_text(self.run_dir / "log.csv", buf.getvalue())

    def write_progress(self, force: bool = False) -> None:
        """RUNDIR/progress.png: at the first epoch, then at most every PROGRESS_SECONDS of
        wall time (a figure costs ~0.1-0.3 s), and always when `force` (the run's end)."""
        from amoseg.training.curves import PROGRESS_SECONDS, save_progress_png

        now = time.monotonic()
        last = getattr(self, "_progress_at", None)
        if force or last is None or now - last >= PROGRESS_SECONDS:
            save_progress_png(self.history, self.run_dir / "progress.png", self.model.name)
            self._progress_at = now

    def write_tensorboard(self, row: dict[str, Any]) -> None:
        """Scalars to RUNDIR/tensorboard when TensorBoard is installed (optional extra)."""
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: log.csv is the log
                self._tb = False
                return
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=row["epoch"])
        if self._tb:
            for key in LOG_FIELDS[1:6]:
                self._tb.add_scalar(key, row[key], row["epoch"])
            self._tb.flush()

    def summary(self) -> dict[str, Any]:
        last = self.history[-1]
        out = {k: last[k] for k in LOG_FIELDS[:5]}
        out.update(
            model=self.model.name,
            best_val_miou=self.best,
            best_epoch=self.best_epoch,
            train_seconds=round(self.train_seconds, 3),
            n_params=int(self.model.n_params),
            device=str(self.model.device),
            validation=last.get("val_on", "volumes"),
            lr_end=self.lr_end,
            precision="bf16" if self.model.use_bf16 else "fp32",
            world_size=self.dist.world,
        )
        if self.dist.is_main:
            write_json(self.run_dir / "summary.json", out)
        return out


def fit(
    model: Any,
    store: Any,
    settings: Any,
    run_dir: Path,
    *,
    resume: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    dist: distributed.DistContext | None = None,
    config: dict[str, Any] | None = None,
    scorer: NativeScorer | None = None,
) -> dict[str, Any]:
    """Train `model` on `store` into `run_dir`: the gradient loop (`fit_torch`), or one
    counting pass for models that are not `gradient_trained`; returns the summary.
    `scorer` scores on the validation scans' own grids (a layer above: the segmenter)."""
    if model.gradient_trained:
        return fit_torch(
            model, store, settings, Path(run_dir),
            resume=resume, on_epoch=on_epoch, dist=dist, config=config, scorer=scorer,
        )  # fmt: skip
    reporter = EpochReporter(
        model, store, settings, Path(run_dir), on_epoch=on_epoch, dist=dist, config=config
    )
    start = time.perf_counter()
    train_loss = model.fit_statistics(store)
    metrics = reporter.validate()
    reporter.record(1, train_loss, 0.0, time.perf_counter() - start, metrics, None)
    return reporter.summary()


def note_saved(run_dir: Path, epoch: int, epochs: int) -> None:
    """What an interrupt leaves: the last epoch on disk, and how to go on."""
    if epoch < 1:
        note_finished(f"train saved no epoch yet in {run_dir}")
    else:
        note_finished(
            f"train saved epoch {epoch} of {epochs} in {run_dir} (continue with --resume)"
        )


def check_finite_loss(train_loss: float, epoch: int, run_dir: Path) -> None:
    """A NaN/Inf loss means the weights are garbage from here on: stop before saving them."""
    if not math.isfinite(train_loss):
        raise AmosegError(
            f"training diverged: the loss is {train_loss} in epoch {epoch}",
            run_dir,
            "lower --lr or check the data; earlier epochs' checkpoints are kept",
        )


def run_epoch(
    model: Any,
    fwd: Any,
    batches: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    gen: torch.Generator,
    on_step: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> tuple[torch.Tensor, int]:
    """The hot loop: (x int16, y uint8) batches → optimiser steps. Returns the summed loss
    as a device tensor (read it once, after the loop) and the number of steps. `stop`,
    asked after each step, ends the epoch early (a time budget's first epoch)."""
    net, device, fast = model.net, model.device, model.use_bf16
    net.train()
    loss_sum = torch.zeros((), device=device)
    steps = 0
    for batch in batches:  # (x, y), or (x, y, image stats) for a per-image z-score
        x, y = model.crop_batch(batch[0], batch[1])
        stats = batch[2].to(device) if len(batch) > 2 else None
        x = x.to(device, non_blocking=True).float()
        y = y.to(device, non_blocking=True).long()
        xn, y = model.augment(net.norm(x, stats), y, gen)
        if fast:
            xn = xn.contiguous(memory_format=model.memory_format)
        with model.train_autocast():
            logits = fwd(xn, normalised=True)
        loss = model.loss(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        steps += 1
        if on_step is not None:
            on_step()
        if stop is not None and stop():
            break
    return loss_sum, steps


def fit_torch(
    model: Any,
    store: Any,
    settings: Any,
    run_dir: Path,
    *,
    resume: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    dist: distributed.DistContext | None = None,
    config: dict[str, Any] | None = None,
    scorer: NativeScorer | None = None,
) -> dict[str, Any]:
    ctx = dist or distributed.DistContext(device=resolve_device(settings.device))
    model.to(ctx.device)
    model.set_precision(settings.precision)
    device = model.device
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    reporter = EpochReporter(
        model, store, settings, run_dir, resume=resume, on_epoch=on_epoch, dist=ctx, config=config
    )

    # a recipe may sample its own patches (`train_dataset` hook, e.g. 3D); otherwise a seed
    # store's slices, or a planned store's configuration patches
    own = model.train_dataset(store, settings.seed)
    dataset = own or training_dataset(store, model.context, settings.seed, model.needs_stats)
    if len(dataset) == 0:
        raise AmosegError("the store has no training slices", store.root / "splits.json")
    sampler = EpochSampler(
        dataset,
        rank=ctx.rank,
        world=ctx.world,
        seed=settings.seed,
        cap=settings.max_slices_per_epoch or getattr(dataset, "samples_per_epoch", None),
    )
    loader = make_loader(
        dataset,
        sampler,
        int(settings.batch_size),
        settings.num_workers,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(loader)
    optimizer = model.make_optimizer(float(settings.lr), float(settings.weight_decay))
    # a time budget re-plans the schedule's length after every epoch (`LrPlan`); the
    # scheduler holds a plain function, so its state_dict stays tensors and numbers only
    plan = LrPlan(model.lr_lambda, steps_per_epoch * settings.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: plan(step))
    mode = settings.validation
    if mode == "auto":  # whole volumes are cheap only for a seed store's S×S slices
        mode = "volumes" if store.info.get("size") is not None else "patches"
    if mode == "patches":
        from amoseg.training.validation import PatchValidation

        reporter.patch_val = PatchValidation(model, store, settings, sampler.per_epoch, ctx)
    budget = Budget(settings.time_budget)
    native_every = (
        NativeEvery(settings.val_native_minutes, scorer)
        if mode == "patches" and settings.val_native_minutes and scorer is not None
        else None
    )

    start_epoch = 1
    if resume:
        latest = run_dir / "checkpoint_latest.pt"
        ckpt = load_checkpoint(latest)
        try:
            model.net.load_state_dict(ckpt["state"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            set_rng_state(ckpt["rng"])
            reporter.restore(ckpt)
            start_epoch = int(ckpt["epoch"]) + 1
            if budget.minutes is not None:
                plan.replan(int(ckpt.get("lr_plan_steps", plan.total)))
                budget.done = bool(ckpt.get("budget_done", False))
                if ckpt.get("epoch_samples"):  # the first epoch's length, kept
                    steps_per_epoch = shorten_epochs(
                        sampler, reporter, int(ckpt["epoch_samples"]), int(settings.batch_size)
                    )
        except MISMATCH_ERRORS as exc:
            raise AmosegError(
                f"checkpoint cannot be resumed ({type(exc).__name__}: "
                f"{' '.join(str(exc).split())[:160]})",
                latest,
                "it is damaged or from another amoseg version; start over with --overwrite",
            ) from exc
    note_saved(run_dir, start_epoch - 1, settings.epochs)

    net = model.net
    fwd: Any = net
    if ctx.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        fwd = DDP(net, device_ids=[device.index] if device.type == "cuda" else None)
    if settings.compile:
        fwd = torch.compile(fwd)
    if ctx.is_main and start_epoch == 1:
        what = (
            f"{sampler.per_epoch} patches/epoch"
            if own is not None
            else f"{len(dataset)} training slices"
        )
        print(
            f"{model.name}: {model.n_params:,} parameters, {what}, "
            f"{steps_per_epoch} steps/epoch on {device}"
            + (f" × {ctx.world} ranks" if ctx.active else "")
        )

    last_epoch = MAX_EPOCHS if budget.minutes is not None else settings.epochs
    total_steps = steps_per_epoch * max(0, settings.epochs - start_epoch + 1)
    show = bool(settings.progress) and ctx.is_main
    with progress_bar(enabled=show) as bar:
        task = bar.add_task(model.name, total=total_steps)
        for epoch in range(start_epoch, last_epoch + 1):
            if budget.done:
                break
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            gen = torch.Generator(device=device)
            gen.manual_seed(settings.seed * 1_000_003 + epoch * 7919 + ctx.rank)
            lr = optimizer.param_groups[0]["lr"]
            stop = budget.first_epoch_stop(t0, ctx) if epoch == 1 else None
            loss_sum, steps = run_epoch(
                model, fwd, loader, optimizer, scheduler, gen,
                on_step=lambda: bar.advance(task), stop=stop,
            )  # fmt: skip
            if steps < steps_per_epoch:  # the budget's share ended the first epoch early
                steps_per_epoch = shorten_epochs(
                    sampler, reporter, steps * int(settings.batch_size) * ctx.world,
                    int(settings.batch_size),
                )  # fmt: skip
                if ctx.is_main:
                    print(
                        f"time budget: epochs of {steps_per_epoch} steps "
                        f"({BUDGET_EPOCH_SHARE:.0%} of {budget.minutes:g} min)",
                        flush=True,
                    )
            distributed.all_reduce_sum(loss_sum, ctx)
            train_loss = float(loss_sum) / max(1, steps_per_epoch * ctx.world)  # one sync
            check_finite_loss(train_loss, epoch, run_dir)
            distributed.broadcast_buffers(net, ctx)
            metrics = reporter.validate()
            seconds = time.perf_counter() - t0
            if budget.minutes is not None:
                left = budget.epochs_left(reporter.train_seconds + seconds, epoch, ctx)
                plan.replan(scheduler.last_epoch + left * steps_per_epoch)
                for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
                    group["lr"] = base_lr * plan(scheduler.last_epoch)  # next step, re-planned
                scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
                bar.update(task, total=bar.tasks[0].completed + left * steps_per_epoch)
            row = reporter.record(
                epoch,
                train_loss,
                lr,
                seconds,
                metrics,
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "lr_plan_steps": plan.total, "budget_done": budget.done,
                 "epoch_samples": sampler.per_epoch},
            )  # fmt: skip
            of = f"{epoch}" if budget.minutes is not None else f"{epoch}/{settings.epochs}"
            line = (
                f"{model.name} epoch {of} "
                f"loss {row['train_loss']:.4f} val mIoU {row['val_miou']:.4f}"
            )
            bar.update(task, description=line)
            if show and bar.disable:  # no terminal (a log file): one line per epoch instead
                print(line, flush=True)
            if native_every is not None and ctx.is_main:
                native_every.maybe(model, store, run_dir, reporter.train_seconds, epoch)
    reporter.lr_end = float(optimizer.param_groups[0]["lr"])
    if ctx.is_main:
        reporter.write_progress(force=True)
    dump = os.environ.get(DUMP_ENV)
    if dump:
        write_text(Path(dump) / f"weights_rank{ctx.rank}.sha256", state_hash(net) + "\n")
    summary = reporter.summary()
    if mode == "patches" and settings.val_native_end and ctx.is_main and scorer is not None:
        summary["val_native"] = scorer.evaluate_val(run_dir, settings)
        write_json(run_dir / "summary.json", summary)
    return summary


class LrPlan:
    """The LR multiplier of a schedule whose length (total steps) can be re-planned."""

    def __init__(self, make: Callable[[int], Callable[[int], float]], total: int):
        self.make = make
        self.replan(total)

    def replan(self, total: int) -> None:
        self.total = max(1, int(total))
        self.factor = self.make(self.total)

    def __call__(self, step: int) -> float:
        return self.factor(step)


def shorten_epochs(sampler: EpochSampler, reporter: Any, samples: int, batch_size: int) -> int:
    """Every epoch from now on draws `samples` (all ranks), and the patch validation checks
    its share of that shorter epoch. Returns the new steps per epoch (per rank)."""
    sampler.limit(samples)
    if getattr(reporter, "patch_val", None) is not None:
        reporter.patch_val.resize(sampler.per_epoch)
    return max(1, sampler.num_samples // batch_size)


class Budget:
    """`--time-budget`: after each epoch, how many more fit in the minutes left, at the
    mean epoch time so far (the first epoch measures it). Rank 0 decides for all ranks."""

    def __init__(self, minutes: float | None):
        self.minutes = minutes
        self.done = False

    def first_epoch_stop(self, t0: float, ctx: distributed.DistContext) -> Any:
        """The first epoch's `stop`: true once it has used BUDGET_EPOCH_SHARE of the budget
        (rank 0's clock decides for every rank, so all take the same steps); None without a
        budget."""
        if self.minutes is None:
            return None
        deadline = t0 + self.minutes * 60 * BUDGET_EPOCH_SHARE

        def stop() -> bool:
            flag = torch.tensor([float(time.perf_counter() >= deadline)], device=ctx.device)
            if ctx.active:
                torch.distributed.broadcast(flag, 0)
            return bool(flag.item())

        return stop

    def epochs_left(self, seconds: float, epochs: int, ctx: distributed.DistContext) -> int:
        assert self.minutes is not None
        per_epoch = seconds / max(1, epochs)
        left = max(0, int((self.minutes * 60 - seconds) // per_epoch))
        if ctx.active:  # every rank must stop at the same epoch
            t = torch.tensor([left], device=ctx.device)
            torch.distributed.broadcast(t, 0)
            left = int(t.item())
        self.done = left == 0
        return left


class NativeScorer(Protocol):
    """Scores on the validation scans' own grids, for patch-validated runs (provided by the
    caller: it runs the segmenter and evaluate, layers above training)."""

    def evaluate_val(self, run_dir: Path, settings: Any) -> dict[str, Any]:
        """`evaluate` of the run's best checkpoint on the val split (RUNDIR/eval_val/)."""
        ...

    def score_model(self, model: Any, store: Any, run_dir: Path, device: str) -> Any:
        """Native scores of the model as it is now ({mean_dice, mean_nsd}), or None when
        the store's original scans are not there."""
        ...


class NativeEvery:
    """`--val-native-every MIN`: every MIN minutes of the training clock, score the current
    model on the val scans' own grids (predict's path, `amoseg score`'s metrics) and append a
    row to RUNDIR/val_native.csv; the scoring itself is not counted on the training clock."""

    FIELDS = ("epoch", "minutes", "mean_dice", "mean_nsd", "seconds")

    def __init__(self, minutes: float, scorer: NativeScorer):
        self.step = float(minutes) * 60
        self.next = self.step
        self.scorer = scorer

    def maybe(self, model: Any, store: Any, run_dir: Path, clock: float, epoch: int) -> None:
        if clock < self.next:
            return
        while self.next <= clock:
            self.next += self.step
        start = time.perf_counter()
        scores = self.scorer.score_model(model, store, run_dir, model.device.type)
        if scores is None:  # no original scans to score on: nothing to add
            return
        row = {"epoch": epoch, "minutes": round(clock / 60, 3),
               "mean_dice": scores["mean_dice"], "mean_nsd": scores["mean_nsd"],
               "seconds": round(time.perf_counter() - start, 2)}  # fmt: skip
        path = run_dir / "val_native.csv"
        old = path.read_text() if path.exists() else ",".join(self.FIELDS) + "\n"
        write_text(path, old + ",".join(str(row[k]) for k in self.FIELDS) + "\n")
