"""The comparisons the notebooks show, as tables: tile size, refine on/off, upscale vs direct,
and a plain-language reading of a sweep's table."""
from __future__ import annotations

from dataclasses import replace

import numpy as np


def tile_study(upscaler_name: str, image, tiles, target=None, device="auto"):
    """Upscale ``image`` with each tile size (0 = the whole image at once).

    Returns a DataFrame: tile (requested), tile_used (largest tile edge run), tiles (network
    passes), seconds, peak_mib (VRAM on CUDA, RSS on the CPU), max_diff / mean_diff (8-bit
    steps from the untiled output; lower is better, 0 = identical).
    """
    import pandas as pd

    from .device import Measure
    from .upscale import load_upscaler

    rows, outputs = [], {}
    for tile in sorted(set(tiles) | {0}, key=lambda t: (t == 0, t)):
        up = load_upscaler(upscaler_name, device=device, tile=tile)
        with Measure(up.device) as m:
            r = up.run(image, target=target)
        outputs[tile] = np.asarray(r.image).astype(np.int64)
        rows.append({"tile": tile, "tile_used": r.tile, "tiles": r.tiles,
                     "seconds": round(m.seconds, 2), "peak_mib": round(m.peak_bytes / 2**20)})
    for row in rows:
        d = np.abs(outputs[row["tile"]] - outputs[0])
        row.update(max_diff=int(d.max()), mean_diff=round(float(d.mean()), 4))
    return pd.DataFrame(rows)


def upscale_vs_direct(settings, generator, upscaler, clip=None, refine: float | None = 0.3):
    """The project's central comparison on one prompt: generate-then-upscale (without and
    with refine) against generating at the target directly.

    clip: a CLIP name or loaded Clip (None / "": no CLIP columns).
    Returns (DataFrame with method, status, seconds, peak_mib, sharpness and, with ``clip``,
    clip_realism and clip_score; {method: final image or None}). Direct runs that run out of
    GPU memory are rows with status "oom".
    """
    import pandas as pd

    from . import metrics as M
    from .pipeline import run

    clip = M.as_clip(clip, device=generator.device)
    plans = {"generate + upscale": replace(settings, refine=None, mode="upscale")}
    if refine:
        plans[f"generate + refine {refine:g} + upscale"] = replace(settings, refine=refine,
                                                                   mode="upscale")
    plans["direct at target"] = replace(settings, refine=None, mode="direct")
    rows, images = [], {}
    for method, s in plans.items():
        r = run(s, generator, upscaler if s.mode == "upscale" else None, progress=False)
        row = {"method": method, "status": r.status, "seconds": round(r.seconds, 2),
               "peak_mib": round(r.peak_bytes / 2**20)}
        if r.image is not None:
            row["sharpness"] = round(M.sharpness(r.image), 2)
            if clip is not None:
                row["clip_realism"] = round(M.clip_realism(clip, [r.image])[0], 4)
                row["clip_score"] = round(M.clip_score(clip, [r.image],
                                                       [s.generate.prompt])[0], 2)
        rows.append(row)
        images[method] = r.image
    return pd.DataFrame(rows), images


def with_baselines(base, image, label: str) -> dict:
    """{"bicubic": ..., "Lanczos": ..., label: image}: ``base`` resized to ``image``'s size by
    the two classic filters, beside ``image`` (for :func:`pegu.plots.side_by_side`)."""
    from PIL import Image

    return {"bicubic": base.resize(image.size, Image.BICUBIC),
            "Lanczos": base.resize(image.size, Image.LANCZOS), label: image}


def overview(table):
    """The columns worth reading first, those the table has: settings that vary, status,
    cost and quality."""
    first = ["model", "generate.prompt", "generate.seed", "mode", "status", "seconds",
             "peak_mib", "generate.seconds", "upscale.seconds", "clip_score", "clip_realism",
             "attribute_control", "sharpness", "error"]
    return table[[c for c in first if c in table]]


def summarize(table) -> str:
    """A short reading of a sweep's table, in Markdown: per model the mean cost and quality,
    then who is fastest, most photographic, best matched and best controlled, failures, and
    (when the sweep has both modes) upscale against direct."""
    if not len(table):
        return "No runs."
    ok = table[table["status"] == "ok"]
    lines = [f"**{len(table)} runs, {len(ok)} succeeded.**"]
    if not len(ok):
        return "\n".join(lines + ["Every run failed: see the `error` column."])
    cols = [c for c in ("seconds", "peak_mib", "clip_score", "clip_realism",
                        "attribute_control", "sharpness") if c in ok]
    per_model = ok.groupby("model")[cols].mean()
    fastest = per_model["seconds"].idxmin()
    lines.append(f"- Fastest: **{fastest}**, {per_model.loc[fastest, 'seconds']:.1f} s per "
                 f"image ({3600 / per_model.loc[fastest, 'seconds']:.0f} images per hour).")
    lightest = per_model["peak_mib"].idxmin()
    lines.append(f"- Least memory: **{lightest}**, peak "
                 f"{per_model.loc[lightest, 'peak_mib']:.0f} MiB.")
    for col, what in (("clip_realism", "Most photographic (CLIP)"),
                      ("clip_score", "Best prompt match (CLIP score)"),
                      ("attribute_control", "Follows attribute edits best")):
        if col in per_model and per_model[col].notna().any():
            best = per_model[col].idxmax()
            lines.append(f"- {what}: **{best}** ({per_model.loc[best, col]:.3g}).")
    failed = table[table["status"] != "ok"]
    if len(failed):
        kinds = failed.groupby("status").size().to_dict()
        lines.append("- Failed: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
                     + " (see the `error` column).")
    if "mode" in ok and ok["mode"].nunique() > 1:
        by_mode = ok.groupby("mode")[["seconds", "peak_mib"]].mean()
        if {"upscale", "direct"} <= set(by_mode.index):
            up, di = by_mode.loc["upscale"], by_mode.loc["direct"]
            lines.append(f"- Generate-then-upscale: {up.seconds:.1f} s and {up.peak_mib:.0f} "
                         f"MiB against direct {di.seconds:.1f} s and {di.peak_mib:.0f} MiB "
                         f"({di.seconds / up.seconds:.1f}× the time).")
    lines += ["", _markdown(per_model.round(3))]
    return "\n".join(lines)


def _markdown(df) -> str:
    """A DataFrame as a Markdown table (index first)."""
    head = [df.index.name or ""] + [str(c) for c in df.columns]
    rows = [[str(i)] + [f"{v:g}" if isinstance(v, float) else str(v) for v in r]
            for i, r in zip(df.index, df.itertuples(index=False))]
    return "\n".join("| " + " | ".join(r) + " |" for r in
                     [head, ["---"] * len(head)] + rows)
