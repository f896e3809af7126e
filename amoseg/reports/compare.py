"""The report's comparison table, generated from evaluated run folders.

Each row comes from one run: config.json (model), summary.json (parameters, training time) and
eval_test/metrics.json (accuracy, mIoU, Dice, inference speed). Percentages in the CSV and the
Markdown are on the 0-100 scale, like the report's table. When any run was evaluated on the
scans' original grids (metrics.json `native`), the table leads with those AMOS-style 3D Dice
and NSD columns; the report-style columns (over the stored slices) follow.

nnU-Net v2 model folders (`amoseg evaluate MODEL_DIR --data STORE` → MODEL_DIR/eval_ensemble_
<split>/) and the `-o` folders of evaluated ensembles and packages are rows too, scored the
same way (native grid only). A model that does not cover every AMOS organ shows those organs
as "not covered", never as 0: when any row lacks an organ, every row's native means are taken
over the organs all rows cover, and the per-organ table says which are left out.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from amoseg.atomic import read_json, write_text
from amoseg.errors import AmosegError
from amoseg.labels import CLASS_NAMES, ORGAN_IDS
from amoseg.render.figures import save_png

COLUMNS = (
    "model",
    "run",
    "organs",
    "native_dice",
    "native_nsd",
    "accuracy",
    "mIoU",
    "mIoU_organs",
    "dice",
    "params",
    "train_seconds",
    "slices_per_s",
    "epochs",
    "test_slices",
)
#: shown only when at least one run has native-grid metrics
NATIVE_COLUMNS = ("native_dice", "native_nsd")
HEADERS = {
    "model": "model",
    "run": "run",
    "organs": "organs covered",
    "native_dice": "native Dice %",
    "native_nsd": "native NSD %",
    "accuracy": "accuracy %",
    "mIoU": "mIoU % (16 cl.)",
    "mIoU_organs": "mIoU % (organs)",
    "dice": "mean organ Dice %",
    "params": "parameters",
    "train_seconds": "training time",
    "slices_per_s": "inference slices/s",
    "epochs": "epochs",
    "test_slices": "test slices",
}

# The report's published test-set numbers on real AMOS data, for reference only.
REPORT_NUMBERS: tuple[tuple[str, float, float], ...] = (
    ("position prior", 95.42, 5.96),
    ("logistic regression, pixel", 85.3, 6.54),
    ("logistic regression, 3×3", 85.8, 6.63),
    ("logistic regression, 5×5", 85.5, 6.60),
    ("fully connected net (220×220)", 50.5, 11.2),
    ("U-Net (report recipe)", 83.5, 72.6),
)


def _pct(x: Any) -> float | None:
    return None if x is None else round(100.0 * float(x), 2)


def load_row(run_dir: str | Path, split: str = "test") -> dict[str, Any]:
    """One table row from a run folder, an nnU-Net model folder or an ensemble's evaluation
    folder; clear errors for a folder that is none of them, or not evaluated."""
    from amoseg.nnunet_models import is_nnunet_model_dir

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AmosegError("run folder not found", run_dir)
    if is_nnunet_model_dir(run_dir):
        return _nnunet_row(run_dir, split)
    if not (run_dir / "config.json").exists() and (run_dir / "metrics.json").is_file():
        return _evaluation_row(run_dir)
    if not (run_dir / "config.json").exists():
        raise AmosegError(
            "not a run folder (no config.json)", run_dir, "pass folders written by `amoseg train`"
        )
    config = read_json(run_dir / "config.json", "run config.json")
    metrics_path = run_dir / f"eval_{split}" / "metrics.json"
    if not metrics_path.exists():
        raise AmosegError(
            f"run has not been evaluated on the {split} split",
            metrics_path,
            f"run `amoseg evaluate {run_dir} --data PREPARED --split {split}` first",
        )
    metrics = read_json(metrics_path, "metrics.json")
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise AmosegError(
            "run has no summary.json (training did not finish)",
            summary_path,
            f"finish it with `amoseg train ... --out {run_dir} --resume`",
        )
    summary = read_json(summary_path, "summary.json")
    settings = config.get("settings") or {}
    native = metrics.get("native") or {}
    return {
        "model": str(config.get("model") or metrics.get("model") or run_dir.name),
        "run": run_dir.name,
        "native_dice": _pct(native.get("mean_dice")),
        "native_nsd": _pct(native.get("mean_nsd")),
        "accuracy": _pct(metrics.get("accuracy")),
        "mIoU": _pct(metrics.get("miou")),
        "mIoU_organs": _pct(metrics.get("miou_organs")),
        "dice": _pct(metrics.get("mean_dice")),
        "params": summary.get("n_params"),
        "train_seconds": None
        if summary.get("train_seconds") is None
        else round(float(summary["train_seconds"]), 1),
        "slices_per_s": metrics.get("slices_per_s"),
        "epochs": settings.get("epochs"),
        "test_slices": metrics.get("n_slices"),
        "store": metrics.get("store"),
        **_coverage(native),
    }


def _coverage(native: dict[str, Any]) -> dict[str, Any]:
    """The AMOS organs a row's model covers (None: all 15) and its native per-organ scores."""
    covered = native.get("covered_organs")
    return {
        "covered": None if covered is None else frozenset(int(i) for i in covered),
        "per_organ": native.get("per_organ") or {},
        "mean_dice_all": native.get("mean_dice"),
        "mean_nsd_all": native.get("mean_nsd"),
    }


def _native_row(model: str, run: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """A row scored on native grids only (an nnU-Net folder, an ensemble, a package)."""
    native = metrics.get("native") or {}
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(model=model, run=run, store=metrics.get("store"))
    row.update(native_dice=_pct(native.get("mean_dice")), native_nsd=_pct(native.get("mean_nsd")))
    return {**row, **_coverage(native)}


def _nnunet_row(folder: Path, split: str) -> dict[str, Any]:
    """An nnU-Net v2 model folder, evaluated by `amoseg evaluate MODEL_DIR` (native grid)."""
    from amoseg.nnunet_models.folder import read_model_folder

    metrics_path = folder / f"eval_ensemble_{split}" / "metrics.json"
    if not metrics_path.is_file():
        raise AmosegError(
            f"nnU-Net model folder has not been evaluated on the {split} split",
            metrics_path,
            f"run `amoseg evaluate {folder} --data PREPARED --split {split}` first",
        )
    metrics = read_json(metrics_path, "metrics.json")
    return _native_row(f"nnU-Net {read_model_folder(folder).name}", folder.name, metrics)


def _evaluation_row(out: Path) -> dict[str, Any]:
    """The -o folder of an evaluated ensemble or package (its metrics.json, native grid)."""
    metrics = read_json(out / "metrics.json", "metrics.json")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("native"), dict):
        raise AmosegError(
            "metrics.json holds no native-grid scores",
            out / "metrics.json",
            "pass a folder `amoseg evaluate MODELS... -o DIR` wrote",
        )
    models = [Path(str(m)).name for m in metrics.get("models") or []]
    return _native_row(" + ".join(models) or out.name, out.name, metrics)


def common_organs(rows: list[dict[str, Any]]) -> frozenset[int] | None:
    """The AMOS organs every row's model covers; None when all rows cover all 15."""
    sets = [r["covered"] for r in rows if r.get("covered") is not None]
    if not sets:
        return None
    return frozenset(ORGAN_IDS).intersection(*sets)


def _organ_mean(row: dict[str, Any], key: str, organs: frozenset[int]) -> float | None:
    values = [
        v[key]
        for name, v in row["per_organ"].items()
        if name in CLASS_NAMES
        and CLASS_NAMES.index(name) in organs
        and isinstance(v, dict)
        and v.get(key) is not None
    ]
    return _pct(float(np.nanmean(values))) if values else None


def settle_coverage(rows: list[dict[str, Any]]) -> frozenset[int] | None:
    """When some row's model does not cover every organ: each row's native means over the
    organs all rows cover (so rows compare like with like) and its "organs covered" cell."""
    common = common_organs(rows)
    if common is None:
        return None
    for row in rows:
        covered = row.get("covered")
        row["organs"] = f"{len(ORGAN_IDS if covered is None else covered)}/{len(ORGAN_IDS)}"
        if row.get("native_dice") is not None:
            row["native_dice"] = _organ_mean(row, "dice", common)
            row["native_nsd"] = _organ_mean(row, "nsd", common)
    return common


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "–"
    if key in {"accuracy", "mIoU", "mIoU_organs", "dice", *NATIVE_COLUMNS}:
        return f"{value:.2f}"
    if key == "params":
        return f"{int(value):,}"
    if key == "train_seconds":
        v = float(value)
        return f"{v:.1f} s" if v < 120 else f"{v / 60:.1f} min"
    if key == "slices_per_s":
        return f"{float(value):.1f}"
    return str(value)


def columns(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """The table's columns: the native-grid ones only when some run has them, "organs
    covered" only when some model does not cover them all."""
    skip = set() if any(r.get("organs") for r in rows) else {"organs"}
    if not any(row.get(k) is not None for row in rows for k in NATIVE_COLUMNS):
        skip |= set(NATIVE_COLUMNS)
    return tuple(k for k in COLUMNS if k not in skip)


def per_organ_table(rows: list[dict[str, Any]]) -> list[str]:
    """Native Dice per organ (rows: organs; columns: models): "not covered" where a model
    does not predict the organ, "–" where no test scan has it."""
    scored = [r for r in rows if r.get("per_organ")]
    if not scored:
        return []
    heads = [r["run"] for r in scored]
    if len(set(heads)) < len(heads):  # e.g. nnU-Net folders of the same trainer and plans
        heads = [f"{i + 1}: {h}" for i, h in enumerate(heads)]
    lines = [
        "## Native Dice per organ (%)",
        "",
        "| organ | " + " | ".join(heads) + " |",
        "|---|" + "---:|" * len(scored),
    ]
    for organ in ORGAN_IDS:
        name, cells = CLASS_NAMES[organ], []
        for row in scored:
            value = row["per_organ"].get(name) or {}
            if row.get("covered") is not None and organ not in row["covered"]:
                cells.append("not covered")
            else:
                cells.append(_fmt("dice", _pct(value.get("dice"))))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return ["", *lines]


def to_csv(rows: list[dict[str, Any]]) -> str:
    cols = columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(cols), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in cols})
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]], chart_name: str | None = None) -> str:
    """The comparison table (best mIoU and Dice in bold), then the report's numbers."""
    cols = columns(rows)
    best = {
        k: max((r[k] for r in rows if r.get(k) is not None), default=None)
        for k in ("mIoU", "dice", *NATIVE_COLUMNS)
    }
    lines = [
        "# Model comparison (test split)",
        "",
        "| " + " | ".join(HEADERS[k] for k in cols) + " |",
        "|" + "|".join("---" if k in {"model", "run"} else "---:" for k in cols) + "|",
    ]
    for row in rows:
        cells = []
        for k in cols:
            text = _fmt(k, row.get(k))
            if k in best and row.get(k) is not None and row[k] == best[k]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    stores = sorted({str(r.get("store")) for r in rows if r.get("store")})
    common = common_organs(rows)
    if NATIVE_COLUMNS[0] in cols:
        over = "the 15 organs"
        if common is not None:
            left = [CLASS_NAMES[i] for i in ORGAN_IDS if i not in common]
            over = (
                f"the {len(common)} organs every model here covers (left out, as some model "
                f"does not predict them: {', '.join(left) or 'none'}; such organs are shown as "
                "not covered, never as 0)"
            )
        lines += [
            "",
            "Native Dice / NSD = AMOS-style per-organ 3D Dice and NSD (2 mm) on each test scan's "
            "original grid over all its slices (`amoseg predict` then `amoseg score`), averaged "
            f"over the cases where the organ is present, then over {over}.",
        ]
    lines += [
        "",
        "Report-style columns (the report's table, over the stored slices: resized to S×S, "
        "only the slices prepare kept): accuracy = pixel accuracy; mIoU (16 cl.) = mean IoU "
        "over background + 15 organs present (the report's definition); mean organ Dice over "
        "the organs present. All from one confusion matrix over every stored test slice.",
    ]
    if len(stores) > 1:
        lines += [
            "",
            "**Warning:** these runs were evaluated on different stores, so their rows are not "
            "comparable: " + ", ".join(f"`{s}`" for s in stores),
        ]
    elif stores:
        lines += ["", f"Test split of `{stores[0]}`."]
    if chart_name:
        lines += ["", f"![{chart_title(rows)} per model]({chart_name})"]
    lines += per_organ_table(rows)
    lines += [
        "",
        "## For reference: the report's published numbers (real AMOS data, not ours)",
        "",
        "These are the original report's test-set results on real AMOS22 scans. They are not "
        "produced by this table's runs and are not comparable with results on synthetic data.",
        "",
        "| report model | accuracy % | mIoU % |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {acc:.2f} | {miou:.2f} |" for name, acc, miou in REPORT_NUMBERS]
    return "\n".join(lines) + "\n"


def chart_series(rows: list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    """(column, legend) of the bars: the native-grid Dice and NSD the table leads with when
    any run has them, else the report-style mIoU and Dice."""
    if NATIVE_COLUMNS[0] in columns(rows):
        return (("native_dice", "native Dice (3D, scan grid)"), ("native_nsd", "native NSD (2 mm)"))
    return (("mIoU", "mIoU (16 classes)"), ("dice", "mean organ Dice (stored slices)"))


def chart_title(rows: list[dict[str, Any]]) -> str:
    if chart_series(rows)[0][0] == NATIVE_COLUMNS[0]:
        return "Test split: native Dice and NSD (each scan's own grid)"
    return "Test split: mIoU and Dice (stored slices)"


def save_bar_chart(rows: list[dict[str, Any]], target: Path) -> Path:
    """Grouped bars per run: the table's leading metrics (`chart_series`); a run without a
    value gets no bar and a dash, not a zero."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    labels = [r["run"] if r["run"] != r["model"] else r["model"] for r in rows]
    x = np.arange(len(rows))
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.2), dpi=110)
    for offset, (key, name) in zip((-width / 2, width / 2), chart_series(rows), strict=True):
        values = [np.nan if r.get(key) is None else float(r[key]) for r in rows]
        bars = ax.bar(x + offset, values, width, label=name)
        texts = ["–" if np.isnan(v) else f"{v:.1f}" for v in values]
        ax.bar_label(bars, labels=texts, fontsize=7, padding=2)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title(chart_title(rows))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, target)


def compare_runs(
    run_dirs: list[str | Path], out_dir: str | Path, split: str = "test"
) -> dict[str, Any]:
    """Write OUT/comparison.{md,csv} and OUT/comparison.png; returns the rows and paths."""
    if not run_dirs:
        raise AmosegError("no run folders given", hint="pass one or more RUNDIRs")
    rows = [load_row(r, split) for r in run_dirs]
    settle_coverage(rows)
    out = Path(out_dir)
    chart = save_bar_chart(rows, out / "comparison.png")
    write_text(out / "comparison.csv", to_csv(rows))
    write_text(out / "comparison.md", to_markdown(rows, chart.name))
    return {
        "rows": rows,
        "markdown": out / "comparison.md",
        "csv": out / "comparison.csv",
        "chart": chart,
    }
