"""Score one trained run on a split of a prepared store: metrics.json plus two figures.

Two views of the same run:

- **native** (AMOS-style, what papers report): each scan of the split is segmented from its
  original image file on its own voxel grid, over all its slices, through `segment_scan`
  (the code path of `amoseg predict`, same defaults), and scored against its original label
  file by `amoseg.metrics.score` (the code of `amoseg score`): per-organ 3D Dice and NSD.
- **report-style** (the report's table, kept at the top level of metrics.json): pixel
  accuracy, mIoU and Dice from confusion matrices over the *stored* slices (resized to S×S,
  only the slices `prepare` kept), the model run through its inferer on the stored grid.
  One matrix accumulates the whole split; one per volume gives per-volume Dice on that grid.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import atomic_dir, read_json, write_json
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES, NUM_CLASSES, ORGAN_IDS, modality_of
from amoseg.metrics.confusion import (
    ConfusionMatrix,
    dice_per_class,
    json_number,
    matrix_summary,
    mean_dice,
)
from amoseg.ops.inferers import model_labels
from amoseg.progress import progress_bar
from amoseg.render.figures import OverlaySample, save_confusion_png, save_overlay_png
from amoseg.store.slice_store import SliceStore
from amoseg.store.store import check_identity

METRICS_FILE = "metrics.json"
CONFUSION_PNG = "confusion_matrix.png"
OVERLAY_PNG = "overlay.png"
DICE_3D_NOTE = (
    "per-volume Dice = dice_per_class of that volume's confusion matrix = 3D Dice on the stored "
    "grid (slices resized to size×size, only the slices kept by prepare)"
)
REPORT_STYLE_NOTE = (
    "report-style: accuracy, miou, miou_organs, mean_dice, per_class, per_volume and "
    "confusion_matrix at the top level are over the stored slices (resized to size×size, only "
    "the slices kept by prepare), the report's table; 'native' holds AMOS-style 3D Dice and "
    "NSD on each scan's original grid"
)
NATIVE_NOTE = (
    "native: each scan segmented from its original image file on its own voxel grid, all "
    "slices, by `amoseg predict`'s segmenter with its defaults (torch backend, precision auto, "
    "body crop where trained so, test-time mirroring only on CUDA and only along the axes a "
    "model trained invariant to, the post-processing saved by `amoseg cv`), then scored "
    "against its original label file by the code of `amoseg score`; per organ, Dice and NSD "
    "are averaged over the cases where the organ is "
    "in the truth or the prediction; mean_dice and mean_nsd average those over the organs "
    "(score's mean_case_dice and mean_nsd); 'score' is score's whole report"
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
    store_size = store.info.get("size")  # None for a planned store (no single S)
    if input_size and store_size is not None and int(input_size) != int(store_size):
        raise AmosegError(
            f"model was trained on {input_size}×{input_size} slices but the store has "
            f"{store_size}×{store_size}",
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
            pred = model_labels(model, store.model_input(case), batch_size)
            seconds += time.perf_counter() - start
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
        "report_style_note": REPORT_STYLE_NOTE,
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


OriginalFiles = list[tuple[str, Path, Path, tuple[int, ...] | None]]


def original_files(store: SliceStore, split: str) -> tuple[OriginalFiles, str]:
    """(case, original image, original label, label lut) of every case of `split`, as
    recorded in its meta.json by `prepare`, or ([], why not) when any of them is unknown or
    gone. The lut maps the label file's ids to AMOS ids (None: AMOS ids already)."""
    found = []
    for case in store.cases(split):
        meta = store.meta(case)
        image, label = meta.get("image_file"), meta.get("label_file")
        if not image or not label:
            return [], f"case {case}'s meta.json names no original image/label files"
        for path in (Path(image), Path(label)):
            if not path.is_file():
                return [], f"original file of case {case} not found: {path}"
        lut = meta.get("label_lut")
        found.append((case, Path(image), Path(label), None if lut is None else tuple(lut)))
    return found, ""


def native_cases(segmenter: Any, files: OriginalFiles) -> Any:
    """Per original scan: (CasePair, predicted labels, truth, spacing) from predict's path
    (the `Segmenter` on the original image) and score's reader (`load_truth`), one at a
    time: what native evaluate and cross-validation both score."""
    from amoseg.inference.inputs import expand_input, load_scan
    from amoseg.metrics.score import CasePair, load_truth

    for case, image_path, label_path, lut in files:
        [item] = expand_input(image_path)
        scan = load_scan(item)
        pred = segmenter.labels(scan.data, scan.image.affine)
        del scan
        truth, spacing = load_truth(label_path, lut=lut)
        if truth.shape != pred.shape:
            raise AmosegError(
                f"original label {truth.shape} and image {pred.shape} differ in shape",
                label_path,
                "the store's meta.json points at mismatched files: re-run prepare",
            )
        yield CasePair(case, image_path, label_path), pred, truth, spacing


def native_metrics(
    segmenter: Any,
    files: OriginalFiles,
    *,
    tolerance_mm: float = 2.0,
    progress: bool = True,
) -> dict[str, Any]:
    """AMOS-style scores on each scan's own grid: the `Segmenter` (predict's path, its
    defaults) on the original image, `score_loaded` (score's code) against the original
    label."""
    from amoseg.metrics.score import score_loaded

    with progress_bar(enabled=progress, transient=True) as bar:
        task = bar.add_task("native grid", total=len(files))
        report = score_loaded(
            native_cases(segmenter, files),
            tolerance_mm,
            on_case=lambda _c: bar.advance(task),
        )
    organs = [row for row in report["per_class"] if row["id"] in ORGAN_IDS]
    # issue 26: a model that does not predict some organs (an nnU-Net model's classes mapped
    # onto AMOS) has them marked not covered; mean_dice still counts them, as AMOS would
    from amoseg.nnunet_models.names import covered_by

    covered = covered_by(segmenter.backends)
    covered_dice = [
        r["case_dice"]
        for r in organs
        if (covered is None or r["id"] in covered) and r["case_dice"] is not None
    ]
    return {
        "covered_organs": None if covered is None else sorted(covered),
        "mean_dice_covered": float(np.nanmean(covered_dice)) if covered_dice else None,
        "definition": NATIVE_NOTE,
        "postprocess": segmenter.postprocess,
        "tta_bundles": segmenter.mirrored_bundles,
        "n_cases": report["n_cases"],
        "tolerance_mm": report["tolerance_mm"],
        "mean_dice": report["mean_case_dice"],
        "mean_nsd": report["mean_nsd"],
        "mean_hd95_mm": report["mean_hd95_mm"],
        "per_organ": {
            row["name"]: {
                "dice": row["case_dice"],
                "nsd": row["nsd"],
                "hd95_mm": row["hd95_mm"],
                "n_cases": row["n_cases"],
                "covered": covered is None or row["id"] in covered,
            }
            for row in organs
        },
        "score": report,  # exactly what `amoseg score` reports for predict's label maps
    }


def check_unseen(split: str, store: SliceStore, runs: list[Path]) -> None:
    """Refuse scores that would flatter: every run must have been trained on this very store
    (its recorded identity, as a resume checks) and, unless the training split itself is asked
    for, on none of the scored cases (a cross-validation fold trains on the store's `val`
    cases of the other folds). Run before any model is opened."""
    from amoseg.store.splits import select_fold

    scored = set(store.splits.get(split, []))
    for run in runs:
        config = read_json(run / "config.json", "run config.json (is this a run folder?)")
        if not isinstance(config, dict):
            raise AmosegError("run config.json is not a JSON object", run / "config.json")
        check_identity((config.get("store") or {}).get("identity"), store.identity(), store.root)
        if split == "train":
            continue  # training-set scores, asked for by name
        fold = (config.get("settings") or {}).get("fold")
        seen = sorted(scored & set(select_fold(store.stored_splits, fold)["train"]))
        if seen:
            which = f"fold {fold} run" if fold is not None else "run"
            raise AmosegError(
                f"this {which} was trained on {len(seen)} of the {len(scored)} '{split}' cases "
                f"it would be scored on (e.g. {seen[0]})",
                run,
                "score on cases no member trained on (e.g. --split test), or use `amoseg cv` "
                "for fold validation",
            )


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 8,
    *,
    n_overlay: int = 4,
    progress: bool = True,
    native: bool = True,
    tta: bool | None = None,
) -> dict[str, Any]:
    """Load the run's best checkpoint, score it on `split` of the store `data` (default: the
    store it was trained on) and write RUNDIR/eval_<split>/ atomically. With `native`, also
    score each scan on its original grid (metrics['native'], None with 'native_skipped'
    saying why when the original files are not available)."""
    from amoseg.inference.bundle import run_bundle
    from amoseg.inference.segmenter import Segmenter, SegmentOptions

    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json", "run config.json (is this a run folder?)")
    if data is None:
        data = (config.get("store") or {}).get("path")
        if not data:
            raise AmosegError("run config.json names no store", run_dir, "pass --data PREPARED")
    store = SliceStore(data)
    store.check_no_leakage()
    check_unseen(split, store, [run_dir])
    bundle = run_bundle(run_dir)
    model = bundle.model(device)
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
    files, why = original_files(store, split) if native else ([], "not asked for (--no-native)")
    metrics["native"] = None
    if files:  # what `amoseg predict RUN` runs, with its defaults
        options = SegmentOptions(device=device, batch_size=batch_size, tta=tta)
        segmenter = Segmenter([bundle], options)
        metrics["native"] = native_metrics(segmenter, files, progress=progress)
    else:
        metrics["native_skipped"] = why
    title = f"{name} — {split} split ({metrics['n_cases']} volumes)"
    with atomic_dir(eval_dir(run_dir, split)) as tmp:
        save_confusion_png(np.asarray(metrics["confusion_matrix"]), tmp / CONFUSION_PNG, title)
        save_overlay_png(samples, tmp / OVERLAY_PNG, title)
        write_json(tmp / METRICS_FILE, metrics)
    return metrics


def evaluate_ensemble(
    models: list[Path],
    data: str | Path | None,
    out: Path,
    split: str = "test",
    device: str = "auto",
    batch_size: int = 8,
    *,
    tta: bool | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Native-grid scores of an ensemble (runs, folders of fold runs, packages: the same list
    `amoseg predict` takes) on `split` of a store: each scan segmented by the averaged
    probabilities of all members, as `predict` does, → OUT/metrics.json."""
    from amoseg.inference.ensemble import member_runs
    from amoseg.inference.package import is_package
    from amoseg.inference.segmenter import Segmenter, SegmentOptions
    from amoseg.nnunet_models import is_nnunet_model_dir

    # the run folders among the members, checked against the store before any model loads
    # (packages and nnU-Net model folders record no store to check against)
    runs = [
        r
        for m in models
        if not is_package(m) and not is_nnunet_model_dir(m)
        for r in member_runs(m) or [Path(m)]
    ]
    if data is None:
        if not runs:
            raise AmosegError("no run among the models names a store", models[0], "pass --data")
        data = (read_json(runs[0] / "config.json", "run config.json").get("store") or {}).get(
            "path"
        )
    store = SliceStore(data)
    store.check_no_leakage()
    check_unseen(split, store, runs)
    files, why = original_files(store, split)
    if not files:
        raise AmosegError(f"cannot score the ensemble natively: {why}", store.root)
    options = SegmentOptions(device=device, tta=tta, batch_size=batch_size)
    segmenter = Segmenter.open(models, options)
    metrics = {
        "models": [str(m) for m in models],
        "members": len(segmenter.backends),
        "runs": [str(r) for r in runs],
        "store": str(Path(data)),
        "split": split,
        "tta": segmenter.mirror,
        "native": native_metrics(segmenter, files, progress=progress),
    }
    write_json(Path(out) / METRICS_FILE, metrics)
    return metrics


class ValidationScorer:
    """Native-grid scoring of a run's validation scans during and after training
    (`amoseg.training.trainer.NativeScorer`): the segmenter on each original scan, scored by
    `amoseg score`'s code."""

    def evaluate_val(self, run_dir: Path, settings: Any) -> dict[str, Any]:
        """`evaluate` of the best checkpoint on the val split (RUNDIR/eval_val/)."""
        metrics = evaluate_run(
            run_dir, split="val", device=settings.device, progress=bool(settings.progress)
        )
        native = metrics.get("native")
        return {
            "mean_dice_store_grid": metrics.get("mean_dice"),
            "mean_dice": None if native is None else native.get("mean_dice"),
            "mean_nsd": None if native is None else native.get("mean_nsd"),
            "eval_dir": str(eval_dir(run_dir, "val")),
        }

    def score_model(self, model: Any, store: Any, run_dir: Path, device: str) -> Any:
        """The model as it is now, as a bundle with the run's config (its preprocessing)."""
        from amoseg.inference.bundle import ModelBundle
        from amoseg.inference.segmenter import Segmenter, SegmentOptions

        files, _why = original_files(store, "val")
        if not files:
            return None
        config = read_json(Path(run_dir) / "config.json", "run config.json")
        bundle = ModelBundle(Path(run_dir), None, model.checkpoint_payload(), config)
        segmenter = Segmenter([bundle], SegmentOptions(device=device, postprocess="none"))
        return native_metrics(segmenter, files, progress=False)
