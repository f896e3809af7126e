"""Cross-validation summary: each fold's validation cases scored on their own voxel grid, the
post-processing choice made from them, and a per-fold / mean ± sd table and figure.

RUN_ROOT holds one run folder per fold (`amoseg train MODEL --fold k --out RUN_ROOT/fold_k`);
each run's config.json says its fold. For every fold, its validation scans are segmented from
their original files (predict's `segment_scan`) and scored against their original labels
(score's code) — once as predicted and once with the largest-component clean-up — so
`amoseg cv` reports AMOS-style native Dice / NSD and chooses, per organ, whether the clean-up
raised the mean validation Dice over all folds (nnU-Net's rule). The choice is written to
RUN_ROOT/postprocessing.json and to each fold's run folder, where `amoseg predict` finds it.

Writes RUN_ROOT/cv/{cv.json, cv_summary.md, cv_summary.csv, cv_dice.png}.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import read_json, write_json, write_text
from amoseg.errors import AmosegError
from amoseg.inference.postprocess import (
    POSTPROCESSING_FILE,
    choose_lcc_organs,
    largest_component_per_organ,
)
from amoseg.labels import CLASS_NAMES, ORGAN_IDS
from amoseg.progress import progress_bar

CV_DIR = "cv"
CV_JSON = "cv.json"


def fold_runs(run_root: str | Path) -> list[tuple[int, Path]]:
    """(fold, run folder) of every run under RUN_ROOT trained on a numbered fold, by fold."""
    from amoseg.inference.ensemble import member_runs

    root = Path(run_root)
    runs = []
    for run in member_runs(root):
        fold = (read_json(run / "config.json", "run config.json").get("settings") or {}).get("fold")
        if isinstance(fold, int):
            runs.append((fold, run))
    if not runs:
        raise AmosegError(
            "no fold runs found",
            root,
            "train each fold into a sub-folder: amoseg train MODEL --fold K --out RUN_ROOT/fold_K",
        )
    folds = [f for f, _ in runs]
    if len(set(folds)) != len(folds):
        raise AmosegError("two runs share a fold", root, "keep one run per fold in RUN_ROOT")
    return sorted(runs)


def _scored(cases: list[tuple[Any, np.ndarray, np.ndarray, Any]], tolerance_mm: float) -> dict:
    from amoseg.metrics.score import score_loaded

    return score_loaded(iter(cases), tolerance_mm)


def validate_fold(
    run_dir: Path, *, device: str = "auto", batch_size: int | None = None,
    tolerance_mm: float = 2.0, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Native-grid scores of one fold run on its own validation cases, without and with the
    largest-component clean-up of every organ."""
    from amoseg.inference.bundle import run_bundle
    from amoseg.inference.segmenter import Segmenter, SegmentOptions
    from amoseg.reports.evaluate import native_cases, original_files
    from amoseg.store.slice_store import SliceStore
    from amoseg.store.splits import select_fold

    config = read_json(run_dir / "config.json", "run config.json")
    store = SliceStore((config.get("store") or {}).get("path", ""))
    store.splits.update(select_fold(store.splits, config["settings"]["fold"]))
    files, why = original_files(store, "val")
    if not files:
        raise AmosegError(f"cannot score fold validation natively: {why}", run_dir)
    # raw labels: the clean-up is what this compares against
    options = SegmentOptions(device=device, batch_size=batch_size, postprocess="none")
    segmenter = Segmenter([run_bundle(run_dir)], options)
    raw: list[tuple[Any, np.ndarray, np.ndarray, Any]] = []
    lcc: list[tuple[Any, np.ndarray, np.ndarray, Any]] = []
    with progress_bar(enabled=progress, transient=True) as bar:
        task = bar.add_task(f"validate {run_dir.name}", total=len(files))
        for pair, pred, truth, spacing in native_cases(segmenter, files):
            raw.append((pair, pred, truth, spacing))
            lcc.append((pair, largest_component_per_organ(pred), truth, spacing))
            bar.advance(task)
    return {"raw": _scored(raw, tolerance_mm), "lcc": _scored(lcc, tolerance_mm)}


def case_dice(report: dict[str, Any]) -> list[dict[int, float | None]]:
    """Per validation case: organ id → Dice (None where the organ is absent from both)."""
    return [
        {
            c["id"]: (None if c["absent"] else c["dice"])
            for c in case["per_class"]
            if c["id"] in ORGAN_IDS
        }
        for case in report["per_case"]
    ]


def postprocessing_choice(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """The clean-up choice from the saved validation results of every fold (reproducible
    from cv.json alone)."""
    raw = [d for f in folds for d in case_dice(f["raw"])]
    lcc = [d for f in folds for d in case_dice(f["lcc"])]
    per_organ = choose_lcc_organs(raw, lcc)
    return {
        "rule": "largest connected component kept for an organ only where it raised the mean "
        "validation Dice over all folds' validation cases (nnU-Net's rule)",
        "lcc_organs": [o for o, v in per_organ.items() if v["apply"]],
        "per_organ": {CLASS_NAMES[o]: v for o, v in per_organ.items()},
        "n_cases": len(raw),
    }


def _mean_sd(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0


def summary_rows(folds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fold (validation mean organ Dice / NSD, as predicted), then mean and sd."""
    rows = [
        {"fold": f["fold"], "n_cases": f["raw"]["n_cases"], "dice": f["raw"]["mean_case_dice"],
         "nsd": f["raw"]["mean_nsd"], "dice_lcc": f["lcc"]["mean_case_dice"]}
        for f in folds
    ]  # fmt: skip
    stats = {k: _mean_sd([r[k] for r in rows]) for k in ("dice", "nsd", "dice_lcc")}
    n = sum(r["n_cases"] for r in rows)
    rows.append({"fold": "mean", "n_cases": n, **{k: v[0] for k, v in stats.items()}})
    rows.append({"fold": "sd", "n_cases": n, **{k: v[1] for k, v in stats.items()}})
    return rows


def per_organ_dice(folds: list[dict[str, Any]]) -> dict[str, list[float | None]]:
    """organ name → each fold's validation Dice (mean over its cases)."""
    out: dict[str, list[float | None]] = {}
    for f in folds:
        for row in f["raw"]["per_class"]:
            if row["id"] in ORGAN_IDS:
                out.setdefault(row["name"], []).append(row.get("case_dice"))
    return out


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{100 * x:.2f}"
    return "n/a" if x is None else str(x)


def write_tables(
    rows: list[dict[str, Any]], organs: dict[str, list[float | None]], out: Path
) -> None:
    keys = ["fold", "n_cases", "dice", "nsd", "dice_lcc"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "cv_summary.csv", buf.getvalue())
    lines = [
        "# Cross-validation (validation of each fold, native grid)",
        "",
        "Mean organ Dice / NSD (%) over each fold's validation scans, each scored on its own "
        "voxel grid; dice_lcc: with every organ's largest connected component kept.",
        "",
        "| fold | cases | Dice | NSD | Dice (LCC) |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['fold']} | {r['n_cases']} | {_fmt(r['dice'])} | {_fmt(r['nsd'])} | "
              f"{_fmt(r['dice_lcc'])} |" for r in rows]  # fmt: skip
    lines += [
        "",
        "| organ | "
        + " | ".join(f"fold {i}" for i in range(len(next(iter(organs.values()), []))))
        + " | mean ± sd |",
    ]
    lines += ["|---" * (2 + len(next(iter(organs.values()), []))) + "|"]
    for name, values in organs.items():
        m, s = _mean_sd([v for v in values if v is not None])
        cells = " | ".join(_fmt(v) for v in values)
        lines.append(f"| {name} | {cells} | {_fmt(m)} ± {_fmt(s)} |")
    write_text(out / "cv_summary.md", "\n".join(lines) + "\n")


def write_figure(organs: dict[str, list[float | None]], out: Path, title: str) -> Path:
    from amoseg.render.figures import _pyplot, save_png

    plt = _pyplot()
    names = list(organs)
    data = [[v for v in organs[n] if v is not None and math.isfinite(v)] for n in names]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    means = [float(np.mean(d)) if d else 0.0 for d in data]
    sds = [float(np.std(d, ddof=1)) if len(d) > 1 else 0.0 for d in data]
    ax.bar(range(len(names)), means, yerr=sds, color="#4c78a8", capsize=3)
    for i, d in enumerate(data):
        ax.scatter([i] * len(d), d, color="black", s=8, zorder=3)
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("validation Dice (native grid)")
    ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, out / "cv_dice.png")


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def editable_outputs(root: Path, runs: list[tuple[int, Path]]) -> list[Path]:
    """What `amoseg cv` writes that a user may edit by hand: the summary tables and every
    post-processing choice (cv.json and the figure are regenerated freely)."""
    return [
        root / CV_DIR / "cv_summary.md",
        root / CV_DIR / "cv_summary.csv",
        root / POSTPROCESSING_FILE,
        *(run / POSTPROCESSING_FILE for _fold, run in runs),
    ]


def _key(root: Path, path: Path) -> str:
    import os

    return os.path.relpath(path, root)


def check_hand_edits(root: Path, runs: list[tuple[int, Path]], overwrite: bool) -> None:
    """Refuse, before any scoring, to replace a file cv did not write as it is now: each
    write's SHA-256 is recorded in cv.json (`written`), so an edited or foreign file differs."""
    if overwrite:
        return
    recorded: dict[str, Any] = {}
    with contextlib.suppress(AmosegError):
        previous = read_json(root / CV_DIR / CV_JSON, CV_JSON)
        if isinstance(previous, dict) and isinstance(previous.get("written"), dict):
            recorded = previous["written"]
    for path in editable_outputs(root, runs):
        if path.is_file() and recorded.get(_key(root, path)) != _digest(path):
            raise AmosegError(
                "cv would replace a file that is not as cv wrote it (edited by hand?)",
                path,
                "pass --overwrite to replace it, or move it away",
            )


def cross_validate(
    run_root: str | Path, *, device: str = "auto", batch_size: int | None = None,
    tolerance_mm: float = 2.0, progress: bool = True, overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Score every fold's validation, choose the post-processing, write the summary (a
    hand-edited summary or choice is replaced only with `overwrite`)."""
    root = Path(run_root)
    runs = fold_runs(root)
    check_hand_edits(root, runs, overwrite)
    folds = []
    for fold, run in runs:
        scored = validate_fold(
            run, device=device, batch_size=batch_size, tolerance_mm=tolerance_mm,
            progress=progress,
        )  # fmt: skip
        folds.append({"fold": fold, "run": str(run), **scored})
    choice = postprocessing_choice(folds)
    rows = summary_rows(folds)
    organs = per_organ_dice(folds)
    out = root / CV_DIR
    out.mkdir(parents=True, exist_ok=True)
    result = {"run_root": str(root), "folds": folds, "summary": rows, "postprocessing": choice}
    write_tables(rows, organs, out)
    write_figure(organs, out, f"{root.name}: {len(folds)}-fold cross-validation")
    for _fold, run in runs:
        write_json(run / POSTPROCESSING_FILE, choice)
    write_json(root / POSTPROCESSING_FILE, choice)
    # last: the digests say these files are cv's own, so a rerun may replace them
    result["written"] = {_key(root, p): _digest(p) for p in editable_outputs(root, runs)}
    write_json(out / CV_JSON, result)
    return result
