"""Figures of a results table (matplotlib): returned for inline display, saved as PNG."""
from __future__ import annotations

from pathlib import Path

from ..core.images import write_png


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
                ax.set_title(_short(cv, 48), fontsize=8)
            if j == 0:
                ax.set_ylabel(_short(rv), fontsize=9)
    fig.tight_layout()
    return _finish(fig, path)


def stage_costs(table, path=None):
    """Mean seconds and peak memory (MiB) of each stage, per model (successful runs)."""
    plt = _plt()
    ok = table[table["status"] == "ok"]
    stages = [c[: -len(".seconds")] for c in table.columns
              if c.endswith(".seconds") and not c.startswith("generate.")] + ["generate"]
    stages = sorted(set(s for s in stages if f"{s}.seconds" in table))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    models = list(dict.fromkeys(ok["model"]))
    width = 0.8 / max(1, len(models))
    for k, m in enumerate(models):
        sub = ok[ok["model"] == m]
        xs = [i + k * width for i in range(len(stages))]
        a1.bar(xs, [sub[f"{s}.seconds"].mean() for s in stages], width, label=m)
        a2.bar(xs, [sub[f"{s}.peak_mib"].mean() for s in stages], width, label=m)
    for ax, label in ((a1, "seconds"), (a2, "peak MiB")):
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(stages))], stages, fontsize=8)
        ax.set_ylabel(label)
    a1.legend(fontsize=8)
    fig.suptitle("Cost per stage (mean over runs)")
    fig.tight_layout()
    return _finish(fig, path)


def quality_vs_time(table, path=None):
    """CLIP realism and CLIP score of each successful run against its total seconds."""
    plt = _plt()
    ok = table[table["status"] == "ok"]
    metrics = [m for m in ("clip_realism", "clip_score", "sharpness") if m in ok]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for m in dict.fromkeys(ok["model"]):
            sub = ok[ok["model"] == m]
            ax.scatter(sub["seconds"], sub[metric], label=m, alpha=0.8)
        ax.set_xlabel("seconds per image")
        ax.set_ylabel(metric)
    axes[0, 0].legend(fontsize=8)
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
    fig.suptitle(title)
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
    fig.suptitle(study.reading().replace("**", "")[:90])
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
        ax.set_title(f"{label}, crop across the seam" if study.seam_x is not None else label)
        ax.set_axis_off()
    im = axes[2].imshow(study.diff, cmap="magma", vmin=0, vmax=max(1.0, float(study.diff.max())))
    if study.seam_x is not None:
        axes[2].axvline(study.seam_x, color="cyan", ls="--", lw=0.8)
    axes[2].add_patch(plt.Rectangle(box[:2], crop, crop, fill=False, color="white", lw=1))
    axes[2].set_title("|tiled − untiled| (8-bit steps)")
    axes[2].set_axis_off()
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    fig.tight_layout()
    return _finish(fig, path)


def bars(table, x: str, ys: list[str], path=None, title: str = ""):
    """One bar chart per column in ``ys`` against the labels in column ``x``."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.6), squeeze=False)
    for ax, y in zip(axes[0], ys):
        ax.bar([str(v) for v in table[x]], table[y])
        ax.set_ylabel(y)
        ax.tick_params(axis="x", labelsize=8, rotation=15)
    fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)


def close(fig) -> None:
    """Free a figure that was saved and will not be shown."""
    _plt().close(fig)


def _finish(fig, path):
    if path is not None:
        save_figure(fig, path)
    return fig


def _short(text, n: int = 38) -> str:
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"
