"""Evaluation figures: a row-normalised confusion matrix and image | truth | prediction overlays.

Slices in the store are canonical (RAS+) axial slices indexed [x, y]; `display_slice` turns them
into the radiological view (anterior up, patient right on the viewer's left) the report's
figures use, so left/right organs appear where a radiologist expects them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from amoseg.atomic import atomic_path
from amoseg.labels import CLASS_COLORS, CLASS_NAMES, NUM_CLASSES
from amoseg.preprocessing.geometry import display_slice

# Abdominal soft-tissue window (HU), the usual choice for reading abdominal CT.
CT_WINDOW = (-160.0, 240.0)
OVERLAY_ALPHA = 0.55


@dataclass(frozen=True)
class OverlaySample:
    """One slice to show: raw image, ground truth and prediction, all (S, S) in store order."""

    case_id: str
    index: int
    modality: str
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def window_image(image: np.ndarray, modality: str) -> np.ndarray:
    """Grey levels in [0, 1]: the abdominal window for CT, 1st-99th percentile for MR
    (MR intensities have no absolute scale)."""
    img = np.asarray(image, dtype=np.float32)
    if modality == "ct":
        lo, hi = CT_WINDOW
    else:
        lo, hi = (float(v) for v in np.percentile(img, (1, 99)))
        if hi <= lo:
            hi = lo + 1.0
    return np.clip((img - lo) / (hi - lo), 0.0, 1.0)


def label_rgba(labels: np.ndarray, alpha: float = OVERLAY_ALPHA) -> np.ndarray:
    """(S, S) ids → (S, S, 4) colours from CLASS_COLORS; background fully transparent."""
    colors = np.zeros((NUM_CLASSES, 4), dtype=np.float32)
    colors[:, :3] = np.asarray(CLASS_COLORS, dtype=np.float32) / 255.0
    colors[1:, 3] = alpha
    return colors[np.asarray(labels, dtype=np.intp)]


def save_confusion_png(matrix: np.ndarray, target: Path, title: str) -> Path:
    """Row-normalised confusion matrix (each true class sums to 1) with class names.

    Row normalisation shows recall per class: without it the background row (≈95 % of
    pixels) would make every organ cell invisible.
    """
    plt = _pyplot()
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(rows > 0, m / rows, np.nan)
    fig, ax = plt.subplots(figsize=(9, 8), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = np.arange(m.shape[0])
    names = list(CLASS_NAMES[: m.shape[0]])
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(ticks, names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (row-normalised; blank row = absent)")
    ax.set_title(title, fontsize=10)
    for t in range(m.shape[0]):
        for p in range(m.shape[1]):
            v = norm[t, p]
            if np.isfinite(v) and v >= 0.005:
                ax.text(
                    p,
                    t,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=5.5,
                    color="white" if v > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_png(fig, target)


def save_overlay_png(samples: list[OverlaySample], target: Path, title: str) -> Path:
    """One row per slice: image | ground truth overlay | prediction overlay, with a legend of
    the organs that appear."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    n = max(len(samples), 1)
    fig, axes = plt.subplots(n, 3, figsize=(9, 3.1 * n), dpi=110, squeeze=False)
    shown: set[int] = set()
    for row, s in enumerate(samples):
        grey = display_slice(window_image(s.image, s.modality))
        panels = (("image", None), ("ground truth", s.truth), ("prediction", s.pred))
        for col, (name, labels) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(grey, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if labels is not None:
                ax.imshow(label_rgba(display_slice(labels)), interpolation="nearest")
                shown.update(int(c) for c in np.unique(labels) if c != 0)
            ax.set_title(f"{s.case_id} slice {s.index} — {name}" if col == 0 else name, fontsize=8)
            ax.axis("off")
    if not samples:
        axes[0, 0].text(0.5, 0.5, "no slices", ha="center", va="center")
        for ax in axes[0]:
            ax.axis("off")
    handles = [
        Patch(color=np.asarray(CLASS_COLORS[c]) / 255.0, label=CLASS_NAMES[c])
        for c in sorted(shown)
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 0.97))
    return save_png(fig, target)


def save_png(fig, target: str | Path, dpi: float | None = None) -> Path:
    """Write a figure atomically (temp name + rename) and close it, even on failure."""
    plt = _pyplot()
    target = Path(target)
    try:
        with atomic_path(target, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return target
