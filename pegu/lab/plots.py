"""Figures of a results table (matplotlib): returned for inline display, saved as PNG.
Every figure says what it shows, over how many runs, and which way is better; axes carry
units; nothing is cut off at the edges (tested)."""
from __future__ import annotations

import textwrap
from pathlib import Path

from ..core.images import write_png
from .check import flag
from .frontier import frontier as frontier_table

# what a column means on an axis: name, unit, and which way is better
LABELS = {
    "seconds": "seconds per image (lower is better)",
    "peak_mib": "peak memory, MiB (lower is better)",
    "max_diff": "largest difference from untiled, 8-bit steps (0 = identical)",
    "mean_diff": "mean difference from untiled, 8-bit steps (0 = identical)",
    "clip_realism": "CLIP realism, 0–1 (higher: more photographic)",
    "clip_score": "CLIP score, 0–100 (higher: closer to the prompt)",
    "sharpness": "sharpness, variance of the Laplacian (higher: sharper)",
    "iqa.hpsv2.1": "HPSv2.1 human preference (higher: preferred)",
    "iqa.imagereward": "ImageReward human preference (higher: preferred)",
    "iqa.pickscore": "PickScore human preference (higher: preferred)",
    "iqa.vqa": "VQA P(yes, shows the prompt), 0–1 (higher: more faithful)",
}


def axis_label(column: str) -> str:
    """A column's axis label (LABELS, else its name), ⚠ where it failed the sanity check."""
    return LABELS.get(column, column) + flag(column)


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("module://matplotlib_inline.backend_inline",
                                                "inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Write ``fig`` as PNG atomically (via pegu.images.write_png)."""
    from PIL import Image

    fig.canvas.draw()
    image = Image.frombuffer("RGBA", fig.canvas.get_width_height(),
                             fig.canvas.buffer_rgba()).convert("RGB")
    return write_png(image, path)


def image_grid(table, path=None, rows: str = "model",
               cols: str | tuple = ("generate.prompt", "generate.seed"), thumb: float = 2.6):
    """The runs' images: one row per ``rows`` value (models), one column per ``cols`` value
    (default: every prompt and seed), the first run of each cell, labelled. Failed runs show
    their status."""
    from PIL import Image

    plt = _plt()
    if not isinstance(cols, str):
        names = [c for c in cols if c in table]
        table = table.assign(_column=[" · ".join(
            f"seed {v}" if c == "generate.seed" else _short(v, 28) for c, v in zip(names, r))
            for r in table[names].itertuples(index=False)])
        cols = "_column"
    r_vals, c_vals = list(dict.fromkeys(table[rows])), list(dict.fromkeys(table[cols]))
    fig, axes = plt.subplots(len(r_vals), len(c_vals), squeeze=False,
                             figsize=(thumb * len(c_vals), thumb * len(r_vals) + 0.4))
    for i, rv in enumerate(r_vals):
        for j, cv in enumerate(c_vals):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            cell = table[(table[rows] == rv) & (table[cols] == cv)]
            ok = cell[cell["status"] == "ok"] if len(cell) else cell
            if len(ok) and isinstance(ok.iloc[0].get("image"), str):
                with Image.open(ok.iloc[0]["image"]) as im:
                    im.thumbnail((512, 512))
                    ax.imshow(im)
            else:
                ax.text(0.5, 0.5, cell.iloc[0]["status"] if len(cell) else "no run",
                        ha="center", va="center", transform=ax.transAxes)
            if i == 0:
                ax.set_title(_wrap(_short(cv, 48), 24), fontsize=8)
            if j == 0:
                ax.set_ylabel(_short(rv), fontsize=9)
    fig.suptitle(f"{len(table)} runs: one row per model, one column per prompt and seed",
                 fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def stage_costs(table, path=None):
    """Mean seconds and peak memory (MiB) of each stage, per model (successful runs), with
    the spread over runs (min–max) drawn on each bar."""
    plt = _plt()
    ok = table[table["status"] == "ok"]
    stages = [c[: -len(".seconds")] for c in table.columns
              if c.endswith(".seconds") and not c.startswith("generate.")] + ["generate"]
    stages = sorted(set(s for s in stages if f"{s}.seconds" in table))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    models = list(dict.fromkeys(ok["model"]))
    width = 0.8 / max(1, len(models))
    for k, m in enumerate(models):
        sub = ok[ok["model"] == m]
        xs = [i + k * width for i in range(len(stages))]
        for ax, what in ((a1, "seconds"), (a2, "peak_mib")):
            cols = [sub[f"{s}.{what}"] for s in stages]
            means = [c.mean() for c in cols]
            # floored at 0: the mean of equal values can round below them (0.7 × 3)
            spread = [[max(0.0, mean - c.min()) for mean, c in zip(means, cols)],
                      [max(0.0, c.max() - mean) for mean, c in zip(means, cols)]]
            ax.bar(xs, means, width, yerr=spread, capsize=2, label=m)
    for ax, label in ((a1, "seconds per image"), (a2, "peak memory, MiB")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(stages))],
                      [_wrap(s, 12) for s in stages], fontsize=8)
        ax.set_ylabel(f"{label} (lower is better)")
    a1.legend(fontsize=8)
    per = ok.groupby("model").size()
    n = f"{per.min()}" if per.min() == per.max() else f"{per.min()}–{per.max()}"
    fig.suptitle(f"Cost per stage: mean over {n} runs per model (lines: min–max); lower is "
                 "better", fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def quality_vs_time(table, path=None):
    """CLIP realism, CLIP score and sharpness of each successful run against its total
    seconds: up and to the left is better."""
    plt = _plt()
    ok = table[table["status"] == "ok"]
    metrics = [m for m in ("clip_realism", "clip_score", "sharpness") if m in ok]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for m in dict.fromkeys(ok["model"]):
            sub = ok[ok["model"] == m]
            ax.scatter(sub["seconds"], sub[metric], label=m, alpha=0.8)
        ax.set_xlabel(LABELS["seconds"], fontsize=8)
        ax.set_ylabel(_wrap(axis_label(metric), 34), fontsize=8)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Quality against time, {len(ok)} runs (one point each): up and to the left "
                 "is better", fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def frontier(table, path=None, quality: str | None = None):
    """Seconds against quality per variant (pegu.lab.frontier): each point a variant's
    mean with its 95% interval as bars, the Pareto frontier drawn as a line through the
    variants on it, which are named. Up and to the left is better."""
    plt = _plt()
    f = frontier_table(table, quality)
    q = f.attrs.get("quality")
    fig, ax = plt.subplots(figsize=(9, 5.5))
    if q is None or not len(f):
        ax.text(0.5, 0.5, "no successful runs with a quality measure", ha="center")
        return _finish(fig, path)

    def spread(col):
        lo, hi = f[f"{col}.lo"].fillna(f[col]), f[f"{col}.hi"].fillna(f[col])
        return [(f[col] - lo).clip(lower=0), (hi - f[col]).clip(lower=0)]

    ax.errorbar(f["seconds"], f[q], xerr=spread("seconds"), yerr=spread(q), fmt="o",
                color="0.55", ecolor="0.75", capsize=2, label="variant (95% interval)")
    front = f[f["pareto"]]
    ax.plot(front["seconds"], front[q], "-o", color="C3", label="Pareto frontier")
    for _, r in front.iterrows():
        ax.annotate(_wrap(r["variant"], 30), (r["seconds"], r[q]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(LABELS["seconds"], fontsize=8)
    ax.set_ylabel(_wrap(axis_label(q), 34), fontsize=8)
    ax.legend(fontsize=8)
    n = f["n"].min() if f["n"].min() == f["n"].max() else f"{f['n'].min()}–{f['n'].max()}"
    fig.suptitle(f"Time against {q}, {len(f)} variants of {n} runs each: up and to the left "
                 "is better; named: the frontier", fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def sweep_plots(table, out) -> dict:
    """The three figures of a sweep, saved under ``out/plots/``; {name: path}."""
    plt = _plt()
    out = Path(out) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    if (table["status"] == "ok").any():
        for name, fn in (("images", image_grid), ("stage_costs", stage_costs),
                         ("quality_vs_time", quality_vs_time)):
            fig = fn(table, out / f"{name}.png")
            paths[name] = out / f"{name}.png"
            plt.close(fig)
    return paths


def side_by_side(images: dict, path=None, title: str = "", zoom=(0.3, 0.15, 0.25)):
    """Each image in full (top row, the zoomed box marked) and a zoomed crop (bottom row),
    labelled by its key. zoom: (x, y, size) of the crop as fractions of the image."""
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(4 * n, 8.4), squeeze=False)
    for col, (label, img) in enumerate(images.items()):
        w, h = img.size
        x, y, s = int(zoom[0] * w), int(zoom[1] * h), max(1, int(zoom[2] * min(w, h)))
        axes[0, col].imshow(img)
        axes[0, col].add_patch(plt.Rectangle((x, y), s, s, fill=False, color="red", lw=1.5))
        axes[0, col].set_title(label)
        axes[1, col].imshow(img.crop((x, y, x + s, y + s)), interpolation="nearest")
        axes[1, col].set_title(f"{label}, zoom")
        for ax in axes[:, col]:
            ax.set_axis_off()
    fig.suptitle(_wrap(title, 110))
    fig.tight_layout(h_pad=2)
    return _finish(fig, path)


def faces(study, path=None):
    """A FaceStudy's squares: before (left) and after (right), a row per face."""
    plt = _plt()
    n = max(1, len(study.before))
    fig, axes = plt.subplots(n, 2, figsize=(8, 4 * n), squeeze=False)
    for row, (before, after) in enumerate(zip(study.before, study.after)):
        for col, (label, img) in enumerate((("before", before), ("after", after))):
            axes[row, col].imshow(img)
            axes[row, col].set_title(f"face {row + 1}, {label}")
    for ax in axes.flat:
        ax.set_axis_off()
    fig.suptitle(_wrap(study.reading().replace("**", ""), 70), fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def seam(study, path=None, crop: int = 96):
    """A crop across the first tile seam, untiled and tiled, and the difference heat map of
    the whole image (8-bit steps, seams dashed). ``study``: pegu.studies.Seam."""
    plt = _plt()
    w, h = study.untiled.size
    cx = study.seam_x if study.seam_x is not None else w // 2
    x0 = min(max(0, cx - crop // 2), max(0, w - crop))
    y0 = max(0, h // 2 - crop // 2)
    box = (x0, y0, x0 + crop, y0 + crop)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
    for ax, (label, img) in zip(axes, (("untiled", study.untiled),
                                       (f"{study.tile} px tiles", study.tiled))):
        ax.imshow(img.crop(box), interpolation="nearest")
        if study.seam_x is not None:
            ax.axvline(study.seam_x - x0 - 0.5, color="red", ls="--", lw=1)
        ax.set_title(f"{label}\n(crop across the seam)" if study.seam_x is not None else label,
                     fontsize=10)
        ax.set_axis_off()
    im = axes[2].imshow(study.diff, cmap="magma", vmin=0, vmax=max(1.0, float(study.diff.max())))
    if study.seam_x is not None:
        axes[2].axvline(study.seam_x, color="cyan", ls="--", lw=0.8)
    axes[2].add_patch(plt.Rectangle(box[:2], crop, crop, fill=False, color="white", lw=1))
    axes[2].set_title("|tiled − untiled|, 8-bit steps\n(whole image; 0 = identical)",
                      fontsize=10)
    axes[2].set_axis_off()
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    fig.suptitle(f"{study.tile} px tiles against the whole image at once, {w}×{h}: the "
                 "seam should not show", fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def bars(table, x: str, ys: list[str], path=None, title: str = ""):
    """One bar chart per column in ``ys``, a horizontal bar per row labelled by column ``x``
    (long method names stay readable); each value axis says its unit and which way is
    better (``LABELS``); a panel of zeros says so."""
    plt = _plt()
    labels = [_wrap(str(v), 26) for v in table[x]]
    height = 1.2 + 0.5 * sum(label.count("\n") + 1 for label in labels)
    fig, axes = plt.subplots(1, len(ys), figsize=(3.6 * len(ys) + 2.2, max(3.2, height)),
                             squeeze=False, sharey=True)
    for ax, y in zip(axes[0], ys):
        values = table[y].astype(float)
        ax.barh(range(len(labels)), values)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()  # the table's order, top to bottom
        ax.set_xlabel(_wrap(LABELS.get(y, y), 30), fontsize=8)
        if len(values) and (values.fillna(0) == 0).all():
            ax.set_xlim(0, 1)
            ax.text(0.5, 0.5, "every value is 0", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
    axes[0, 0].set_ylabel(x, fontsize=8)
    fig.suptitle(_wrap(title, 110), fontsize=10)
    fig.tight_layout()
    return _finish(fig, path)


def close(fig) -> None:
    """Free a figure that was saved and will not be shown."""
    _plt().close(fig)


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def _wrap(text: str, width: int) -> str:
    """Text broken into lines of at most ``width`` characters."""
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _short(text, n: int = 38) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
