"""RUNDIR/progress.png: a run's loss, validation Dice and learning rate against epochs and
against minutes of training, rewritten (atomically) as it trains."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

#: rewrite progress.png at most this often (wall seconds) between the first and last epoch
PROGRESS_SECONDS = 30.0


def _series(history: list[dict[str, Any]], key: str) -> list[float]:
    """`key` per epoch (NaN where missing); val_dice only where it came from whole volumes
    (with patch validation it is the pseudo-Dice, plotted under its own name)."""
    out = []
    for row in history:
        value = row.get(key)
        if key == "val_dice" and row.get("val_on") == "patches":
            value = None
        out.append(float(value) if isinstance(value, int | float) else math.nan)
    return out


def save_progress_png(history: list[dict[str, Any]], target: Path, title: str) -> Path | None:
    """Three rows (training loss; validation Dice: pseudo-Dice on patches and/or Dice on
    volumes; learning rate), against epochs (left) and minutes (right)."""
    if not history:
        return None
    import io

    from matplotlib.figure import Figure  # no pyplot: no global state, a third of the cost

    from amoseg.atomic import write_bytes

    epochs = _series(history, "epoch")
    minutes = _series(history, "minutes")
    fig = Figure(figsize=(10, 8))
    axes = fig.subplots(3, 2, sharex="col")
    rows = (
        ("training loss", [("train_loss", "loss")]),
        ("validation Dice", [("val_pseudo_dice", "pseudo-Dice (patches)"),
                             ("val_dice", "mean organ Dice (volumes)")]),
        ("learning rate", [("lr", "lr at epoch start")]),
    )  # fmt: skip
    for r, (ylabel, keys) in enumerate(rows):
        for c, x in enumerate((epochs, minutes)):
            ax = axes[r][c]
            for key, label in keys:
                y = _series(history, key)
                if any(math.isfinite(v) for v in y):
                    ax.plot(x, y, marker="." if len(x) < 50 else None, label=label)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            if r == 1:
                ax.legend(fontsize=8)
    axes[2][0].set_xlabel("epoch")
    axes[2][1].set_xlabel("minutes of training")
    fig.suptitle(f"{title}: {len(history)} epochs, {minutes[-1]:.1f} min")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    write_bytes(target, buf.getvalue())
    return target
