"""Pictures people look at rather than read: the comparison chart shows what the table leads
with, overlay titles are legible, and organs that touch get colours one can tell apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from amoseg.atomic import write_json
from amoseg.labels import CLASS_COLORS, CLASS_NAMES


def cie_lab(rgb: tuple[int, int, int]) -> np.ndarray:
    """sRGB (D65) → CIE L*a*b*."""
    c = np.asarray(rgb, float) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    to_xyz = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = to_xyz @ c / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def delta_e(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    """CIE76 colour difference: about 2.3 is just noticeable; 25 is clearly different."""
    return float(np.linalg.norm(cie_lab(a) - cie_lab(b)))


def test_delta_e_matches_known_values():
    assert delta_e((255, 255, 255), (0, 0, 0)) == pytest.approx(100, abs=0.1)
    assert delta_e((255, 0, 0), (255, 0, 0)) == 0
    assert delta_e((255, 0, 0), (0, 255, 0)) == pytest.approx(170.6, abs=0.5)


@pytest.mark.parametrize("a, b", [(2, 6), (3, 6), (2, 3)])
def test_right_kidney_liver_and_left_kidney_look_different(a, b):
    """They touch on most abdominal slices: a reader must tell them apart at a glance."""
    distance = delta_e(CLASS_COLORS[a], CLASS_COLORS[b])
    assert distance > 25, f"{CLASS_NAMES[a]} vs {CLASS_NAMES[b]}: ΔE {distance:.1f}"


def _relative_luminance(rgb) -> float:
    c = np.asarray(rgb, float)
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    return float(c @ [0.2126, 0.7152, 0.0722])


def test_overlay_slice_titles_are_readable(monkeypatch, tmp_path):
    """At least 14 px tall in the PNG and WCAG AAA contrast (≥ 7:1) with the background."""
    from matplotlib.colors import to_rgb

    from amoseg.inference import overlay

    captured = {}
    original = overlay.save_png

    def spy(fig, target, dpi=None):
        captured["titles"] = [ax.title for ax in fig.axes if ax.get_title()]
        captured["face"] = fig.get_facecolor()
        captured["dpi"] = dpi or fig.dpi
        return original(fig, target, dpi=dpi)

    monkeypatch.setattr(overlay, "save_png", spy)
    labels = np.zeros((32, 32, 8), np.uint8)
    labels[8:20, 8:20, 2:6] = 6
    image = np.where(labels > 0, 60, -50).astype(np.int16)
    overlay.write_overlay(image, labels, tmp_path / "o.png", title="case")
    titles = captured["titles"]
    assert len(titles) == 4
    for title in titles:
        assert title.get_fontsize() * captured["dpi"] / 72 >= 14, title.get_text()
        fg = _relative_luminance(to_rgb(title.get_color()))
        bg = _relative_luminance(captured["face"][:3])
        assert (max(fg, bg) + 0.05) / (min(fg, bg) + 0.05) >= 7
    assert titles[0].get_text() == "slice 3 / 8"


def _evaluated_run(root: Path, name: str, native: dict | None, miou: float, dice: float) -> Path:
    run = root / name
    write_json(run / "config.json", {"model": name, "settings": {"epochs": 1}})
    write_json(run / "summary.json", {"n_params": 10, "train_seconds": 1.0})
    metrics = {"accuracy": 0.9, "miou": miou, "mean_dice": dice, "n_slices": 4}
    if native is not None:
        metrics["native"] = native
    write_json(run / "eval_test" / "metrics.json", metrics)
    return run


def _bars_drawn(monkeypatch, run_dirs, out) -> list[tuple[str, list[float]]]:
    """compare_runs, recording every bar series the chart draws: (legend, heights)."""
    from matplotlib.axes import Axes

    from amoseg.reports.compare import compare_runs

    drawn = []
    original = Axes.bar

    def spy(self, x, height, *args, **kwargs):
        drawn.append((kwargs.get("label"), [float(h) for h in height]))
        return original(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)
    compare_runs(run_dirs, out)
    return drawn


def test_comparison_chart_plots_the_native_dice_the_table_leads_with(monkeypatch, tmp_path):
    runs = [
        _evaluated_run(tmp_path, "unet", {"mean_dice": 0.593, "mean_nsd": 0.61}, 0.80, 0.70),
        _evaluated_run(tmp_path, "prior", {"mean_dice": 0.05, "mean_nsd": 0.04}, 0.95, 0.06),
    ]
    drawn = _bars_drawn(monkeypatch, runs, tmp_path / "report")
    legend, heights = drawn[0]
    assert legend.startswith("native Dice") and heights == [59.3, 5.0]
    assert drawn[1][0].startswith("native NSD") and drawn[1][1] == [61.0, 4.0]
    md = (tmp_path / "report" / "comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert header.split(" | ")[2] == "native Dice %"  # the table leads with it too
    assert "![Test split: native Dice and NSD (each scan's own grid) per model]" in md


def test_comparison_chart_without_native_metrics_plots_miou_and_dice(monkeypatch, tmp_path):
    runs = [_evaluated_run(tmp_path, "unet", None, 0.80, 0.70)]
    drawn = _bars_drawn(monkeypatch, runs, tmp_path / "report")
    assert [(legend.split(" (")[0], h) for legend, h in drawn] == [
        ("mIoU", [80.0]),
        ("mean organ Dice", [70.0]),
    ]
