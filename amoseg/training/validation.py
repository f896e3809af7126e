"""Cheap per-epoch validation: nnU-Net's pseudo-Dice on validation patches.

Whole-volume validation of full-size scans costs minutes per scan on a CPU (more than an
epoch); nnU-Net validates each epoch on a few batches of patches instead, accumulating
true/false positives and false negatives per class over them and reporting the mean
foreground Dice of those global counts (its "pseudo Dice"). `PatchValidation` does the same
with a fixed, seeded set of validation samples (the same every epoch, so epochs compare):
patches of the training kind from the validation cases (a seed store: its slices). By
default the set is 10 % of an epoch's training samples (at least one batch): a forward pass
is cheaper than a training step, so validation stays under 10 % of the epoch.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from amoseg.labels import NUM_CLASSES

#: validation samples per epoch, as a share of the epoch's training samples
VAL_SHARE = 0.1


class PseudoDice:
    """Per-class TP / FP / FN (and the voxel count) accumulated on the device, nnU-Net's way."""

    def __init__(self, num_classes: int = NUM_CLASSES, device: Any = "cpu"):
        self.num_classes = num_classes
        # rows: tp, fp, fn per class
        self.counts = torch.zeros(3, num_classes, dtype=torch.int64, device=device)
        self.voxels = torch.zeros((), dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> PseudoDice:
        p, t = pred.reshape(-1).long(), target.reshape(-1).to(pred.device).long()
        n = self.num_classes
        tp = torch.bincount(t[p == t], minlength=n)
        self.counts[0] += tp
        self.counts[1] += torch.bincount(p, minlength=n) - tp
        self.counts[2] += torch.bincount(t, minlength=n) - tp
        self.voxels += p.numel()
        return self

    def all_reduce(self) -> PseudoDice:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.counts)
            dist.all_reduce(self.voxels)
        return self

    def dice_per_class(self) -> np.ndarray:
        """2TP / (2TP + FP + FN); NaN for a class neither predicted nor present."""
        tp, fp, fn = self.counts.cpu().numpy().astype(np.float64)
        denom = 2 * tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, 2 * tp / denom, np.nan)

    def pseudo_dice(self) -> float:
        """Mean foreground Dice over the classes present (nnU-Net's `mean_fg_dice`)."""
        dice = self.dice_per_class()[1:]
        return float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan")

    def metrics(self) -> dict[str, float]:
        """val_miou (16 classes, as the volume validation), val_dice (= the pseudo-Dice),
        val_acc, from the same counts."""
        tp, fp, fn = self.counts.cpu().numpy().astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        voxels = int(self.voxels)
        return {
            "val_miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "val_dice": self.pseudo_dice(),
            "val_acc": float(tp.sum() / voxels) if voxels else float("nan"),
        }


def validation_count(per_epoch: int, batch_size: int, available: int, wanted: int | None) -> int:
    """How many validation samples an epoch checks: `wanted`, else VAL_SHARE of the epoch's
    training samples but at least one batch; never more than the validation set has."""
    n = wanted if wanted else max(int(batch_size), math.ceil(VAL_SHARE * per_epoch))
    return max(1, min(int(n), int(available)))


class PatchValidation:
    """A fixed, seeded set of validation samples (this rank's share), scored each epoch."""

    def __init__(self, model: Any, store: Any, settings: Any, per_epoch: int, dist: Any):
        from amoseg.training.data import training_dataset

        seed = int(settings.seed) + 1  # not the training draw
        dataset = model.train_dataset(store, seed, split="val") or training_dataset(
            store, model.context, seed, model.needs_stats, split="val"
        )
        self.dataset, self.settings, self.dist = dataset, settings, dist
        self.order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
        self.resize(per_epoch)

    def resize(self, per_epoch: int) -> None:
        """Check the share of an epoch of `per_epoch` training samples (the first of the
        same fixed, seeded order: a shorter epoch checks a prefix of the longer one's)."""
        from torch.utils.data import DataLoader, Subset

        s = self.settings
        n = validation_count(per_epoch, s.batch_size, len(self.dataset), s.val_patches)
        mine = self.order[:n][self.dist.rank :: self.dist.world].tolist()  # EpochPatches' epoch 0
        self.samples = n
        self.loader = DataLoader(Subset(self.dataset, mine), batch_size=int(s.batch_size))

    @torch.no_grad()
    def run(self, model: Any) -> PseudoDice:
        """The model in eval mode on every sample (cut to its body box where the model
        predicts on one), in the training precision; counts summed over ranks."""
        net, device = model.net, model.device
        net.eval()
        score = PseudoDice(device=device)
        for batch in self.loader:  # (x, y), or (x, y, image stats) for a per-image z-score
            x, y = model.crop_batch(batch[0], batch[1])
            stats = batch[2].to(device) if len(batch) > 2 else None
            x = x.to(device).float()
            if model.use_bf16:
                x = x.contiguous(memory_format=model.memory_format)
            with model.train_autocast():
                logits = net(x, stats)
            score.update(logits.argmax(1), y.to(device))
        return score.all_reduce()
