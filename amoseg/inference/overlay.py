"""A PNG montage of axial slices with the predicted organs coloured in, for a quick look."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from amoseg.labels import CLASS_COLORS, CLASS_NAMES, NUM_CLASSES
from amoseg.preprocessing.geometry import display_slice
from amoseg.render.figures import save_png

# Soft-tissue window (HU): organs are told apart by contrast within it.
WINDOW = (-160.0, 240.0)
#: resolution and type sizes: a slice title is 11 pt at 100 dpi (15 px), black on white
DPI = 100
TITLE_PT = 11
LEGEND_PT = 9


def montage_slices(labels: np.ndarray, count: int) -> list[int]:
    """Evenly spaced axial slice indices, over the organ-bearing range when there is one."""
    nz = labels.shape[2]
    present = np.flatnonzero(labels.reshape(-1, nz).any(axis=0))
    lo, hi = (int(present[0]), int(present[-1])) if present.size else (0, nz - 1)
    return sorted({round(float(v)) for v in np.linspace(lo, hi, min(count, hi - lo + 1))})


def write_overlay(
    image: np.ndarray, labels: np.ndarray, target: Path, title: str = "", count: int = 12
) -> Path:
    """Canonical (X, Y, Z) image and labels → PNG grid in radiological view, with a legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = np.asarray(CLASS_COLORS, dtype=np.float32) / 255.0
    rgba = np.concatenate([colors, np.full((NUM_CLASSES, 1), 0.45, np.float32)], axis=1)
    rgba[0, 3] = 0.0
    indices = montage_slices(labels, count)
    cols = min(4, len(indices))
    rows = int(np.ceil(len(indices) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 1.0), squeeze=False)
    fig.set_facecolor("white")
    for ax in axes.ravel():
        ax.axis("off")
    nz = labels.shape[2]
    for ax, z in zip(axes.ravel(), indices, strict=False):
        ax.imshow(display_slice(image[:, :, z]), cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
        ax.imshow(rgba[display_slice(labels[:, :, z])], interpolation="nearest")
        # 1-based and counted inferior → superior, as the HTML viewer numbers slices
        ax.set_title(f"slice {z + 1} / {nz}", fontsize=TITLE_PT, color="black")
    present = [k for k in range(1, NUM_CLASSES) if (labels == k).any()]
    handles = [Patch(color=colors[k], label=CLASS_NAMES[k]) for k in present]
    if handles:
        fig.legend(
            handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=LEGEND_PT
        )
    if title:
        fig.suptitle(title, fontsize=TITLE_PT + 2, color="black")
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    return save_png(fig, target, dpi=DPI)
