"""Score one trained run on a split of a prepared store: metrics.json plus two figures.

Every number comes from confusion matrices (amoseg.metrics.confusion), so accuracy, IoU and Dice
can never disagree. One matrix accumulates the whole split (dataset-level 2D metrics, as in
the report); one matrix per volume gives per-volume 3D Dice, because the Dice of a volume's
confusion matrix *is* the 3D Dice of that volume. It is measured on the stored grid (slices
resized to S×S, only the slices `prepare` kept), not on the scan's original voxel grid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import atomic_dir, read_json, write_json
from amoseg.data.slice_store import SliceStore
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES, NUM_CLASSES, modality_of
from amoseg.metrics.confusion import (
    ConfusionMatrix,
    dice_per_class,
    json_number,
    matrix_summary,
    mean_dice,
)
from amoseg.progress import progress_bar
from amoseg.reports.figures import OverlaySample, save_confusion_png, save_overlay_png

METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"
OVERLAY_PNG = "overlay.png"
DICE_3D_NOTE = (
    "per-volume Dice = dice_per_class of that volume's confusion matrix = 3D Dice on the stored "
    "grid (slices resized to size×size, only the slices kept by prepare)"
)


def eval_dir(run_dir: str | Path, split: str = "test") -> Path:
    return Path(run_dir) / f"eval_{split}"


def _overlay_score(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice: number of distinct organs, organ pixel count. Chosen from ground truth only,
    so every model is shown on the same slices."""
    flat = truth.reshape(truth.shape[0], -1)
    organs = np.stack([(flat == c).any(axis=1) for c in range(1, NUM_CLASSES)], axis=1).sum(axis=1)
    return organs, (flat > 0).sum(axis=1)


def evaluate_model(
    model: Any,
    store: SliceStore,
    split: str = "test",
    *,
    batch_size: int = 8,
    n_overlay: int = 4,
    progress: bool = True,
    title: str | None = None,
) -> tuple[dict[str, Any], list[OverlaySample]]:
    """Predict every case of `split` volume by volume → (metrics dict, overlay samples)."""
    cases = store.cases(split)
    if not cases:
        raise AmosegError(
            f"the '{split}' split of the store has no cases",
            store.root / "splits.json",
            "prepare a store with more cases or choose another --split",
        )
    input_size = getattr(model, "input_size", None)
    if input_size is not None and int(input_size) != store.size:
        raise AmosegError(
            f"model was trained on {input_size}×{input_size} slices but the store has "
            f"{store.size}×{store.size}",
            store.root,
            "evaluate on the store the run was trained on (see its config.json)",
        )
    total = ConfusionMatrix(NUM_CLASSES)
    per_volume: list[dict[str, Any]] = []
    candidates: list[tuple[int, int, OverlaySample]] = []
    seconds = 0.0
    n_slices = 0
    with progress_bar(enabled=progress, transient=True) as bar:
        task = bar.add_task(f"evaluate {split}", total=len(cases))
        for case in cases:
            image = store.image(case)  # memory-mapped (N, S, S) int16
            truth = np.array(store.label(case))  # a writable copy: torch refuses read-only
            start = time.perf_counter()
            pred = model.predict_volume(image, batch_size=batch_size)
            seconds += time.perf_counter() - start
            pred = np.asarray(pred)
            if pred.shape != truth.shape:
                raise RuntimeError(f"model returned {pred.shape} for a {truth.shape} volume")
            n_slices += truth.shape[0]
            volume = ConfusionMatrix(NUM_CLASSES).update(pred, truth)
            total.merge(volume)
            dice = dice_per_class(volume)
            per_volume.append(
                {
                    "case_id": case,
                    "n_slices": int(truth.shape[0]),
                    "mean_dice": json_number(mean_dice(volume)),
                    "dice": {CLASS_NAMES[c]: json_number(dice[c]) for c in range(NUM_CLASSES)},
                }
            )
            organs, pixels = _overlay_score(truth)
            i = int(np.lexsort((pixels, organs))[-1])  # most organs, then most organ pixels
            modality = store.meta(case).get("modality") or modality_of(case)
            sample = OverlaySample(case, i, modality, np.asarray(image[i]), truth[i], pred[i])
            candidates.append((int(organs[i]), int(pixels[i]), sample))
            bar.advance(task)
    candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)
    samples = [c[2] for c in candidates[:n_overlay]]
    metrics = summarize(total, per_volume)
    metrics.update(
        {
            "split": split,
            "n_cases": len(cases),
            "n_slices": n_slices,
            "inference_seconds": round(seconds, 4),
            "slices_per_s": round(n_slices / seconds, 3) if seconds > 0 else None,
            "batch_size": batch_size,
        }
    )
    return metrics, samples


def summarize(cm: ConfusionMatrix, per_volume: list[dict[str, Any]]) -> dict[str, Any]:
    """The metrics.json body for one dataset matrix and the per-volume records."""
    m = cm.matrix
    headline = matrix_summary(m)
    for row in headline["per_class"]:
        row["absent_in_truth"] = row["gt_voxels"] == 0
    vol_means = [v["mean_dice"] for v in per_volume if v["mean_dice"] is not None]
    return {
        "accuracy": headline["accuracy"],
        "miou": headline["miou"],
        "miou_definition": "mean IoU over the 16 classes (background included) present in truth "
        "or prediction: the report's definition",
        "miou_organs": headline["miou_organs"],
        "mean_dice": headline["mean_dice"],
        "mean_dice_definition": "mean Dice over the 15 organs present, from the dataset matrix",
        "mean_volume_dice": json_number(float(np.mean(vol_means))) if vol_means else None,
        "per_class": headline["per_class"],
        "per_volume": per_volume,
        "per_volume_dice_note": DICE_3D_NOTE,
        "confusion_matrix": m.tolist(),
    }


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 8,
    *,
    n_overlay: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Load the run's best checkpoint, score it on `split` of the store `data` (default: the
    store it was trained on) and write RUNDIR/eval_<split>/ atomically."""
    from amoseg.training import load_run

    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json", "run config.json (is this a run folder?)")
    if data is None:
        data = (config.get("store") or {}).get("path")
        if not data:
            raise AmosegError("run config.json names no store", run_dir, "pass --data PREPARED")
    store = SliceStore(data)
    store.check_no_leakage()
    model = load_run(run_dir, device=device)
    name = str(config.get("model") or getattr(model, "name", run_dir.name))
    metrics, samples = evaluate_model(
        model, store, split, batch_size=batch_size, n_overlay=n_overlay, progress=progress
    )
    metrics = {
        "model": name,
        "run": str(run_dir),
        "store": str(Path(data)),
        "device": device,
        **metrics,
        "figures": {"confusion": CONFUSION_PNG, "overlay": OVERLAY_PNG},
    }
    title = f"{name} — {split} split ({metrics['n_cases']} volumes)"
    with atomic_dir(eval_dir(run_dir, split)) as tmp:
        save_confusion_png(np.asarray(metrics["confusion_matrix"]), tmp / CONFUSION_PNG, title)
        save_overlay_png(samples, tmp / OVERLAY_PNG, title)
        write_json(tmp / METRICS_FILE, metrics)
    return metrics
