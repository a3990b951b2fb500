"""Figures a reviewer accepts: titled with what, how many and which way is better; axes with
units; no text cut off at the figure's edge; tick labels that do not overlap; a panel of
zeros that says so. Drawn from tables and images built here (no model needed)."""
from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pegu.lab import plots
from pegu.lab.studies import FaceStudy, Seam

matplotlib.use("Agg")


def _texts(fig):
    """(text, its box on the canvas) of every text the figure draws: titles, axis labels,
    texts, and the tick labels of axes that are shown."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = list(fig.texts)
    for ax in fig.axes:
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.axison:  # the ticks matplotlib draws: those within the view
            texts += [ax.xaxis.label, ax.yaxis.label,
                      *(t.label1 for axis in (ax.xaxis, ax.yaxis) for t in axis._update_ticks())]
    return [(t, t.get_window_extent(renderer)) for t in texts
            if t.get_visible() and t.get_text().strip()]


def _cut_off(fig) -> list[str]:
    """Texts that reach beyond the figure's edges."""
    w, h = fig.bbox.width, fig.bbox.height
    return [t.get_text() for t, b in _texts(fig)
            if b.x0 < -1 or b.y0 < -1 or b.x1 > w + 1 or b.y1 > h + 1]


def _overlapping_ticks(fig) -> list[str]:
    renderer = fig.canvas.get_renderer()
    found = []
    for ax in fig.axes:
        ticks = [t.label1 for t in ax.xaxis._update_ticks() if t.label1.get_text().strip()]
        boxes = [t.get_window_extent(renderer) for t in ticks]
        for i in range(len(boxes) - 1):
            if boxes[i].overlaps(boxes[i + 1]):
                found.append(f"{ticks[i].get_text()!r} / {ticks[i + 1].get_text()!r}")
    return found


def _check(fig, *title_words):
    assert _cut_off(fig) == [], _cut_off(fig)
    assert _overlapping_ticks(fig) == []
    title = fig._suptitle.get_text() if fig._suptitle else ""
    for word in title_words:
        assert word in title, (word, title)
    plots.close(fig)


@pytest.fixture
def table(tmp_path):
    rows = []
    for m, model in enumerate(("realistic-vision-v6", "sdxl-base")):
        for seed in range(3):
            path = tmp_path / f"{model}_{seed}.png"
            Image.new("RGB", (64, 64), (40 * seed, 100, 50 * m)).save(path)
            rows.append({"model": model, "generate.prompt": "RAW photo, portrait of an old "
                         "fisherman at golden hour, film grain", "generate.seed": seed,
                         "status": "ok", "image": str(path), "seconds": 10.0 + 5 * m + seed,
                         "generate.seconds": 8.0 + 5 * m, "generate.peak_mib": 3000 + 900 * m,
                         "upscale.seconds": 2.0 + seed, "upscale.peak_mib": 1250.0,
                         "clip_realism": 0.6 + 0.01 * seed, "clip_score": 25.0 + m,
                         "sharpness": 100.0 + seed})
    return pd.DataFrame(rows)


def test_sweep_figures(table):
    _check(plots.image_grid(table), "6 runs", "model")
    fig = plots.stage_costs(table)
    assert all("lower is better" in ax.get_ylabel() for ax in fig.axes)
    _check(fig, "3 runs per model", "min–max", "lower is better")
    fig = plots.quality_vs_time(table)
    labels = [ax.get_ylabel().replace("\n", " ") for ax in fig.axes]
    assert "CLIP realism, 0–1 (higher: more photographic)" in labels
    assert all("lower is better" in ax.get_xlabel() for ax in fig.axes)
    _check(fig, "6 runs", "up and to the left is better")


def test_stage_costs_with_equal_runs(table):
    """Three runs of 0.7 s average to 0.69999…: the bars still draw (no negative spread)."""
    table = table.assign(**{"upscale.seconds": 0.7})
    _check(plots.stage_costs(table), "3 runs per model", "min–max")


def test_bars_label_units_wrap_long_names_and_say_when_all_zero():
    comparison = pd.DataFrame({
        "method": ["generate + upscale", "generate + refine 0.3 + upscale",
                   "generate + upscale + tiled refine 0.3",
                   "generate + upscale + tiled refine 0.5 + ControlNet 1", "direct at target"],
        "seconds": [1.0, 2.0, 3.0, 4.0, 5.0], "peak_mib": [1250.0] * 5,
        "clip_realism": [0.5, 0.6, 0.55, 0.52, 0.58]})
    fig = plots.bars(comparison, "method", ["seconds", "peak_mib", "clip_realism"],
                     title="realistic-vision-v6, one prompt and seed, to 2048×2048: median of "
                           "3 runs per method")
    _check(fig, "realistic-vision-v6", "2048", "3 runs")
    tiles = pd.DataFrame({"tile": [128, 256, 0], "seconds": [3.0, 2.0, 1.5],
                          "peak_mib": [900.0, 1000.0, 1400.0], "max_diff": [0, 0, 0]})
    fig = plots.bars(tiles, "tile", ["seconds", "peak_mib", "max_diff"], title="tiles")
    texts = [t.get_text() for t, _ in _texts(fig)]
    assert "every value is 0" in texts
    _check(fig)


def test_study_figures():
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))
    diff = np.zeros((256, 256))
    _check(plots.seam(Seam(a, a, 128, 128, diff)), "128 px tiles", "should not show")
    square = a.crop((0, 0, 64, 64))
    study = FaceStudy([square], [square], [0.9], [0.85], 12.5)
    _check(plots.faces(study))  # its long reading is wrapped, not cut off
    _check(plots.side_by_side({"bicubic": a, "Lanczos": a, "RealESRGAN_x4plus": a},
                              title="astronaut: 256×256 → 1024×1024, a long title that goes "
                                    "on and on to test that it wraps at the figure's edge"))
