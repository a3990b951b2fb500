"""The comparisons the notebooks show, as tables: tile size, a tile seam, refine on/off,
upscale vs direct, and plain-language readings of them."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..core.device import Measure
from ..core.errors import BadInput, WeightsUnavailable
from ..core.geometry import axis_tiles
from ..core.images import read_image
from ..core.settings import FaceSettings, check_repeats
from ..generate.faces import refine_faces
from ..pipeline import timed_run
from ..upscale import load_upscaler
from . import metrics as M
from .check import flag
from . import judges
from .iqa import (CMMD_CAVEAT, KID_SUBSETS, check_crop, compare, compare_cmmd, embeddings,
                  features, images_in, inception, lower_better)
from .metrics import seam_ratio

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat")  # scikit-image's colour photos


def source_image(name: str = "astronaut", generated=None, long_side: int = 0):
    """The image an upscaling study starts from, as PIL RGB: a scikit-image photograph
    (``PHOTOS``), an image file, or "generated" for ``generated`` (a run's base image);
    shrunk with Lanczos so that its long side is ``long_side`` (0: as it is)."""
    from PIL import Image

    if name == "generated":
        if generated is None:
            raise BadInput("photo='generated' needs a generated image: run the pipeline first")
        image = generated.convert("RGB")
    elif name in PHOTOS:
        from skimage import data

        image = Image.fromarray(getattr(data, name)()).convert("RGB")
    elif Path(name).expanduser().is_file():
        image = read_image(Path(name).expanduser()).convert("RGB")
    else:
        raise BadInput(f"photo must be one of {', '.join(PHOTOS)}, 'generated' or an image "
                         f"file; got {name!r}")
    if long_side and max(image.size) > long_side:
        k = long_side / max(image.size)
        image = image.resize((max(1, round(image.width * k)), max(1, round(image.height * k))),
                             Image.LANCZOS)
    return image


@dataclass(frozen=True)
class Seam:
    """Tiled against untiled output of one network. seam_x: output column of the first
    vertical seam (None: one tile spans the width); diff: |tiled − untiled| per pixel in
    8-bit steps, the mean over the colour channels, shape (height, width)."""

    untiled: object
    tiled: object
    tile: int
    seam_x: int | None
    diff: np.ndarray

    def near_seam(self, band: int = 8) -> float:
        """Largest difference within ``band`` output px of the seam (0 without a seam)."""
        if self.seam_x is None:
            return 0.0
        return float(self.diff[:, max(0, self.seam_x - band):self.seam_x + band].max())

    def ratio(self) -> tuple[float, float] | None:
        """pegu.metrics.seam_ratio across the seam column, in the tiled and the untiled
        output (the same measure the face stage and the tiled refine are held to)."""
        if self.seam_x is None:
            return None
        box = (self.seam_x, 0, self.tiled.width, self.tiled.height)
        return seam_ratio(self.tiled, box), seam_ratio(self.untiled, box)


def seam_study(upscaler_name: str, image, tile: int, device="auto") -> Seam:
    """Upscale ``image`` whole and in ``tile`` px tiles with one network; where they differ."""
    whole = load_upscaler(upscaler_name, device=device, tile=0).upscale(image)
    up = load_upscaler(upscaler_name, device=device, tile=tile)
    tiled = up.upscale(image)
    spans = axis_tiles(image.size[0], tile, min(up.tile_overlap, tile // 2))
    seam_x = None if len(spans) < 2 else round((spans[1][0] + spans[0][1]) / 2 * up.scale)
    diff = np.abs(np.asarray(tiled, dtype=np.float32) - np.asarray(whole, dtype=np.float32))
    return Seam(whole, tiled, tile, seam_x, diff.mean(axis=2))


@dataclass(frozen=True)
class FaceStudy:
    """The face stage on one image: each refined square before and after, the seam ratio
    of its border after the paste (pegu.metrics.seam_ratio; the untouched image's beside
    it), the stage's seconds."""

    before: list
    after: list
    seam: list
    seam_untouched: list
    seconds: float

    def reading(self) -> str:
        if not self.before:
            return "**Faces.** No face found (the detector needs faces of at least 24 px)."
        worst = max(a / max(b, 1e-9) for a, b in zip(self.seam, self.seam_untouched))
        return (f"**Faces.** {len(self.before)} face(s) refined in {self.seconds:.1f} s; "
                f"across each pasted square's border the image changes at most {worst:.2f}× "
                "as much as it does across the same lines in the untouched image (1 = no "
                "seam; a hard paste of a colour-shifted crop reads above 2.5).")


def face_study(image, generator, settings, strength: float = 0.35) -> FaceStudy:
    """Run the face stage on ``image`` (PIL) with ``generator`` and ``settings``
    (GenerateSettings: the prompt) and keep what a reader compares."""
    image = image.convert("RGB")
    t0 = time.perf_counter()
    out, faces = refine_faces(image, generator, settings, FaceSettings(strength=strength))
    seconds = time.perf_counter() - t0
    crops = [f.crop for f in faces]
    return FaceStudy([image.crop(c) for c in crops], [out.crop(c) for c in crops],
                     [seam_ratio(out, c) for c in crops],
                     [seam_ratio(image, c) for c in crops], seconds)


def tile_study(upscaler_name: str, image, tiles, target=None, device="auto",
               repeats: int = 3):
    """Upscale ``image`` with each tile size (0 = the whole image at once): one untimed
    warm-up, then ``repeats`` timed runs per tile.

    Returns a DataFrame: tile (requested), tile_used (largest tile edge run), tiles (network
    passes), seconds (median of the repeats; seconds_min / seconds_max their spread),
    peak_mib (VRAM on CUDA, RSS on the CPU), max_diff / mean_diff (8-bit steps from the
    untiled output; lower is better, 0 = identical).
    """
    import pandas as pd

    check_repeats(repeats)
    rows, outputs = [], {}
    for tile in sorted(set(tiles) | {0}, key=lambda t: (t == 0, t)):
        up = load_upscaler(upscaler_name, device=device, tile=tile)
        up.run(image, target=target)  # warm-up: first-call costs stay out of the times
        times, peak = [], 0
        for _ in range(repeats):
            with Measure(up.device) as m:
                r = up.run(image, target=target)
            times.append(m.seconds)
            peak = max(peak, m.peak_bytes)
        outputs[tile] = np.asarray(r.image).astype(np.int64)
        rows.append({"tile": tile, "tile_used": r.tile, "tiles": r.tiles,
                     "seconds": round(float(np.median(times)), 3),
                     "seconds_min": round(min(times), 3), "seconds_max": round(max(times), 3),
                     "peak_mib": round(peak / 2**20)})
    for row in rows:
        d = np.abs(outputs[row["tile"]] - outputs[0])
        row.update(max_diff=int(d.max()), mean_diff=round(float(d.mean()), 4))
    return pd.DataFrame(rows)


def upscale_vs_direct(settings, generator, upscaler, clip=None, refine: float | None = 0.3,
                      repeats: int = 1, progress: bool = False, control: float | None = None,
                      control_strength: float = 0.5):
    """The project's central comparison on one prompt: generate-then-upscale (without
    refine, with refine at twice the base, with the tiled refine at the target, and with
    ``control``, the tiled refine at ``control_strength`` held by a tile ControlNet of that
    weight) against generating at the target directly. Each method gets an untimed
    warm-up, then ``repeats`` timed runs (pegu.pipeline.timed_run).

    clip: a CLIP name or loaded Clip (None / "": no CLIP columns).
    Returns (DataFrame with method, status, seconds (the median run; seconds_min /
    seconds_max), peak_mib, sharpness and, with ``clip``, clip_realism and clip_score;
    {method: final image or None}). Direct runs that run out of GPU memory are rows with
    status "oom". progress: one bar over the methods (the runs' own bars stay off: one
    cell, one bar).
    """
    import pandas as pd

    clip = M.as_clip(clip, device=generator.device)
    plans = {"generate + upscale": replace(settings, refine=None, refine_tiled=False,
                                           refine_control=None, controlnet=None,
                                           mode="upscale")}
    if refine:
        plans[f"generate + refine {refine:g} + upscale"] = replace(
            settings, refine=refine, refine_tiled=False, refine_control=None, controlnet=None,
            mode="upscale")
        plans[f"generate + upscale + tiled refine {refine:g}"] = replace(
            settings, refine=refine, refine_tiled=True, refine_size=None, mode="upscale")
    if control:
        plans[f"generate + upscale + tiled refine {control_strength:g} + ControlNet "
              f"{control:g}"] = replace(settings, refine=control_strength, refine_tiled=True,
                                        refine_size=None, refine_control=control,
                                        mode="upscale")
    plans["direct at target"] = replace(settings, refine=None, refine_tiled=False,
                                        refine_control=None, controlnet=None, mode="direct")
    from tqdm.auto import tqdm

    rows, images = [], {}
    bar = tqdm(plans.items(), total=len(plans), desc="methods", unit="method",
               disable=not progress)
    for method, s in bar:
        bar.set_postfix_str(method)
        try:
            r = timed_run(s, generator, upscaler if s.mode == "upscale" else None,
                          repeats=repeats, progress=False)
        except WeightsUnavailable as e:  # the ControlNet's weights not at hand: the other rows stay
            if s.refine_control is None:
                raise
            warnings.warn(f"{method} not run: {e}", stacklevel=2)
            rows.append({"method": method, "status": "no weights"})
            images[method] = None
            continue
        row = {"method": method, "status": r.status, "seconds": round(r.seconds, 3),
               "seconds_min": min(r.repeat_seconds), "seconds_max": max(r.repeat_seconds),
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


def walkthrough_reading(photo: str, source, tiles, seam: Seam, comparison, model: str) -> str:
    """What notebook 02 shows, in Markdown, from its tables: the photograph studied, the tile
    trade-off, whether the seam shows, and generate-then-upscale against direct (one prompt
    and seed: no interval)."""
    w, h = seam.untiled.size
    lines = [f"- **Photograph.** {photo}, {source.width}×{source.height} → {w}×{h}."]
    whole = tiles[tiles["tile"] == 0].iloc[0]
    tiled = tiles[tiles["tile"] != 0]
    if len(tiled):
        small = tiled.sort_values("tile").iloc[0]
        lines.append(
            f"- **Tiles.** {int(small.tile)} px tiles ({int(small.tiles)} passes) took "
            f"{fmt(small.seconds)} s [{fmt(small.seconds_min)}–{fmt(small.seconds_max)}] and "
            f"{small.peak_mib:.0f} MiB peak; the whole image at once {fmt(whole.seconds)} s "
            f"[{fmt(whole.seconds_min)}–{fmt(whole.seconds_max)}] and {whole.peak_mib:.0f} MiB "
            f"(medians of repeats after a warm-up, [min–max]). Tiled output differs from "
            f"untiled by at most {int(tiled.max_diff.max())} and on average "
            f"{fmt(tiled.mean_diff.max())} 8-bit steps.")
    if seam.seam_x is None:
        lines.append(f"- **Seam.** A {seam.tile} px tile spans the image: no seam to show.")
    else:
        near, rest = seam.near_seam(), float(seam.diff.max())
        verdict = ("no larger there than anywhere else: the seam does not show"
                   if near <= rest * 0.999 or near <= 2 else
                   "largest at the seam: look at the crop")
        tiled_ratio, untiled_ratio = seam.ratio()
        lines.append(f"- **Seam.** Within 8 px of the first seam (x = {seam.seam_x}) tiled "
                     f"and untiled differ by at most {near:.0f} 8-bit steps (mean of the colour "
                     f"channels), {rest:.0f} over the whole image — {verdict}. Seam ratio "
                     f"across that column {tiled_ratio:.2f} tiled, {untiled_ratio:.2f} untiled "
                     "(1 = like any other column).")
    ok = comparison.set_index("method")
    if "direct at target" in ok.index and "generate + upscale" in ok.index:
        up, di = ok.loc["generate + upscale"], ok.loc["direct at target"]
        if di.status == "ok":
            lines.append(f"- **Upscale against direct.** Generate-then-upscale took "
                         f"{fmt(up.seconds)} s and {up.peak_mib:.0f} MiB; generating at the "
                         f"target directly {fmt(di.seconds)} s and {di.peak_mib:.0f} MiB "
                         f"({di.seconds / up.seconds:.1f}× the time, "
                         f"{di.peak_mib / max(up.peak_mib, 1):.1f}× the memory).")
        else:
            lines.append(f"- **Upscale against direct.** Direct generation failed ({di.status}); "
                         f"generate-then-upscale took {fmt(up.seconds)} s.")
        tiled = [m for m in ok.index if "tiled refine" in m and "ControlNet" not in m]
        held = [m for m in ok.index if "ControlNet" in m]
        if held and ok.loc[held[0], "status"] == "ok":
            c = ok.loc[held[0]]
            lines.append(f"- **ControlNet tile.** The tiled refine held by the tile ControlNet "
                         f"({held[0].split(' + ', 2)[2]}) took {fmt(c.seconds)} s and "
                         f"{c.peak_mib:.0f} MiB ({c.seconds / up.seconds:.1f}× "
                         "generate-then-upscale): the ControlNet runs beside the UNet on "
                         "every tile, and lets a higher strength add detail without new "
                         "content.")
        if tiled and ok.loc[tiled[0], "status"] == "ok":
            t = ok.loc[tiled[0]]
            lines.append(f"- **Tiled refine.** Upscaling then refining at the target in "
                         f"native-size tiles took {fmt(t.seconds)} s and {t.peak_mib:.0f} MiB "
                         f"({t.seconds / up.seconds:.1f}× generate-then-upscale): the price "
                         "of real detail at full size.")
        if "clip_realism" in ok and ok["clip_realism"].notna().all():
            values = ", ".join(f"{m} {fmt(v)}" for m, v in ok["clip_realism"].items())
            lines.append(f"- **Realism (CLIP)**, higher is more photographic: {values}. One "
                         "prompt and seed: no interval, so no method is named best here — "
                         "notebook 01 measures it over prompts × seeds.")
    if model.startswith("tiny-"):
        lines.append(f"- {model} is a random test network: its images are noise, so only the "
                     "photograph's panels and the costs mean anything here.")
    return "\n".join(lines)


def with_baselines(base, image, label: str) -> dict:
    """{"bicubic": ..., "Lanczos": ..., label: image}: ``base`` resized to ``image``'s size by
    the two classic filters, beside ``image`` (for :func:`pegu.plots.side_by_side`)."""
    from PIL import Image

    return {"bicubic": base.resize(image.size, Image.BICUBIC),
            "Lanczos": base.resize(image.size, Image.LANCZOS), label: image}


def overview(table):
    """The columns worth reading first, those the table has: settings that vary, status,
    cost and quality (a measure that failed pegu's sanity check marked ⚠)."""
    first = ["model", "generate.prompt", "generate.seed", "mode", "upscale.model", "status",
             "seconds", "seconds_min", "seconds_max", "peak_mib", "generate.seconds", "upscale.seconds", "clip_score", "clip_realism",
             "attribute_control", "vqa_control", "sharpness", "error"]
    first += [c for c in table if str(c).startswith("iqa.")]
    shown = table[[c for c in first if c in table]]
    return shown.rename(columns={c: c + flag(c, short=True) for c in shown if flag(c)})


# the columns summarize reads: name -> (the leader's title, the measure, unit, whether
# higher is better)
_READ = {"seconds": ("Fastest", "Time", "s per image", False),
         "peak_mib": ("Least memory", "Peak memory", "MiB", False),
         "clip_realism": ("Most photographic (CLIP)", "Photorealism (CLIP)", "", True),
         "clip_score": ("Best prompt match (CLIP score)", "Prompt match (CLIP score)", "",
                        True),
         "attribute_hit": ("Follows attribute edits best", "Attribute control", "", True),
         "vqa_hit": ("Follows attribute edits best (VQA)", "Attribute control (VQA questions)",
                     "", True),
         "sharpness": ("Sharpest", "Sharpness", "", True)}
_JUDGED = {"hpsv2.1": "Human preference (HPSv2.1)", "pickscore": "Human preference (PickScore)",
           "imagereward": "Human preference (ImageReward)",
           "vqa": "Prompt faithfulness (VQA P(yes))"}


def _reads(table) -> dict:
    """_READ, and a line per IQA column (``iqa.<name>``: pyiqa's and the judges') the table
    holds; a measure that failed pegu's sanity check says so (pegu.lab.check.flag)."""
    extra = {}
    for c in map(str, table.columns):
        if c.startswith("iqa.") and not c.endswith((".lo", ".hi")):
            name = c[4:]
            judged = _JUDGED.get(name.removeprefix("tiny-"))
            measure = (judged + (" stand-in" if name.startswith("tiny-") else "")
                       if judged else f"{name} (pyiqa)")
            extra[c] = (f"Best {measure[0].lower()}{measure[1:]}", measure, "",
                        not lower_better(name))
    reads = {**_READ, **extra}
    return {c: (what + flag(c), measure + flag(c), unit, higher)
            for c, (what, measure, unit, higher) in reads.items()}


# The fewest values an interval is drawn from: a percentile bootstrap of 2-4 values resamples
# almost nothing (from 2 values it can only say min..max, often of width ~0) and its coverage
# is far below the nominal level, so pegu states no interval and names no winner below this.
MIN_FOR_INTERVAL = 5
# FID's Inception features have 2,048 dimensions: from fewer images their covariance is rank
# deficient and FID is strongly biased upward (Chong & Forsyth 2020, "Effectively Unbiased
# FID"); such values are said to be comparable only at equal image counts.
FID_FULL_RANK = 2048


def fmt(x, digits: int = 3) -> str:
    """A number as a person reads it: ``digits`` significant digits in plain notation
    (1250, not 1.25e+03; 0.0476, not 4.76e-02), thousands separated."""
    if x != x:
        return "n/a"
    if x == 0 or not 1e-4 <= abs(x) < 1e15:
        return f"{x:.{digits}g}"
    decimals = max(0, digits - 1 - int(np.floor(np.log10(abs(x)))))
    return f"{round(x, decimals):,.{decimals}f}"


def bootstrap_ci(values, level: float = 0.95, resamples: int = 2000) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (scipy.stats.bootstrap, fixed
    seed, so a table reads the same twice); (nan, nan) for fewer than MIN_FOR_INTERVAL
    values."""
    from scipy import stats

    x = np.asarray([v for v in values if v == v], dtype=float)  # NaN: a metric not measured
    if len(x) < MIN_FOR_INTERVAL:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # identical values: a zero-width interval
        ci = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=resamples,
                             method="percentile", random_state=0).confidence_interval
    return float(ci.low), float(ci.high)


def confidence_table(table, by: str = "model", level: float = 0.95):
    """Per ``by`` value, over its successful rows (prompts × seeds): n, and for each measured
    measured column (``_READ``'s and ``iqa.*``) its mean with a bootstrap ``level`` interval (``<col>.lo`` /
    ``<col>.hi``; NaN with a single row)."""
    import pandas as pd

    ok = table[table["status"] == "ok"]
    cols = [c for c in _reads(table) if c in ok and ok[c].notna().any()]
    rows = []
    for name, group in ok.groupby(by, sort=True):
        row = {by: name, "n": len(group)}
        for c in cols:
            v = pd.to_numeric(group[c], errors="coerce")
            row[c] = float(v.mean())
            row[f"{c}.lo"], row[f"{c}.hi"] = bootstrap_ci(v, level)
        rows.append(row)
    return pd.DataFrame(rows).set_index(by)


def summarize(table) -> str:
    """A short reading of a sweep's table, in Markdown: per model the mean cost and quality
    with 95% bootstrap intervals over prompts × seeds, who is fastest, lightest, most
    photographic, best matched and best controlled (or "no measured difference" where the
    leader's interval overlaps the runner-up's), chance levels, failures, how the times
    were taken, and (when the sweep has both modes) upscale against direct."""
    if not len(table):
        return "No runs."
    ok = table[table["status"] == "ok"]
    lines = [f"**{len(table)} runs, {len(ok)} succeeded.**"]
    if not len(ok):
        return "\n".join(lines + ["Every run failed: see the `error` column."])
    ci = confidence_table(table)
    for col, (what, measure, unit, higher) in _reads(table).items():
        if col in ci and col != "sharpness":
            lines.append(_leader(ci, col, (what, measure), unit, higher, table))
    failed = table[table["status"] != "ok"]
    if len(failed):
        kinds = failed.groupby("status").size().to_dict()
        lines.append("- Failed: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
                     + " (see the `error` column).")
    if "mode" in ok and ok["mode"].nunique() > 1:
        by_mode = confidence_table(table, by="mode")
        if {"upscale", "direct"} <= set(by_mode.index):
            up, di = by_mode.loc["upscale"], by_mode.loc["direct"]
            lines.append(f"- Generate-then-upscale: {_mean_ci(up, 'seconds')} s and "
                         f"{up.peak_mib:.0f} MiB against direct {_mean_ci(di, 'seconds')} s "
                         f"and {di.peak_mib:.0f} MiB ({di.seconds / up.seconds:.1f}× the time).")
    lines.append("- " + _timing_note(ok))
    shown = ci[["n"] + [c for c in _reads(ci) if c in ci]]
    table_md = shown.apply(lambda r: [int(r.n)] + [_mean_ci(ci.loc[r.name], c)
                                                   for c in shown.columns[1:]],
                           axis=1, result_type="expand")
    table_md.columns = [{"attribute_hit": "attribute_control", "vqa_hit": "vqa_control"}.get(c, c)
                        + flag(c, short=True) for c in shown.columns]
    lines += ["", _table_title(ci), "", _markdown(table_md)]
    return "\n".join(lines)


def _table_title(ci) -> str:
    """What the means table carries: intervals, and where they are missing, why."""
    few = int((ci["n"] < MIN_FOR_INTERVAL).sum())
    if few == len(ci):
        return (f"Means over prompts × seeds (no intervals: an interval needs at least "
                f"{MIN_FOR_INTERVAL} runs per model):")
    why = (f" (none for {few} model(s) with fewer than {MIN_FOR_INTERVAL} runs)" if few else "")
    return f"Means with 95% bootstrap intervals [low, high] over prompts × seeds{why}:"


def _mean_ci(row, col: str) -> str:
    """``mean [lo, hi]`` in plain numbers (no interval from too few values)."""
    mean, lo, hi = row[col], row[f"{col}.lo"], row[f"{col}.hi"]
    return fmt(mean) if lo != lo else f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def _leader(ci, col: str, names: tuple[str, str], unit: str, higher: bool, table) -> str:
    """One line: the best model on ``col``; no measured difference where its interval
    overlaps the runner-up's; no winner where either has too few runs for an interval, or
    where there is one model (``names``: the leader's title, the measure's name)."""
    order = ci[col].dropna().sort_values(ascending=not higher)
    best = order.index[0]
    what, measure = names
    unit = f" {unit}" if unit else ""
    chance = (f"; chance {table['attribute_chance'].dropna().mean():.2g}"
              if col in ("attribute_hit", "vqa_hit") and "attribute_chance" in table else "")
    if len(order) > 1:
        second = order.index[1]
        lo, hi = ci.loc[best, f"{col}.lo"], ci.loc[best, f"{col}.hi"]
        lo2, hi2 = ci.loc[second, f"{col}.lo"], ci.loc[second, f"{col}.hi"]
        if lo != lo or lo2 != lo2:
            n = int(min(ci.loc[best, "n"], ci.loc[second, "n"]))
            means = ", ".join(f"{m} {fmt(ci.loc[m, col])}" for m in order.index)
            return (f"- {measure}: no winner — {n} run(s) per model, and an interval needs at "
                    f"least {MIN_FOR_INTERVAL} (means: {means}{unit}{chance}).")
        if lo <= hi2 and lo2 <= hi:
            return (f"- {measure}: no measured difference between **{best}** "
                    f"({_mean_ci(ci.loc[best], col)}) and **{second}** "
                    f"({_mean_ci(ci.loc[second], col)}){unit}: the intervals overlap{chance}.")
    text = (f"- {what}: **{best}**, " if len(order) > 1 else f"- {measure}: {best} ") + \
        f"{_mean_ci(ci.loc[best], col)}{unit}"
    if col == "seconds":
        text += f" ({3600 / ci.loc[best, col]:,.0f} images per hour)"
    text += chance
    return text + "."


def _timing_note(ok) -> str:
    """How the times were taken: warm-up and repeats, as the rows record them."""
    warm = "warmed_up" in ok and ok["warmed_up"].fillna(False).astype(bool).all()
    repeats = int(ok["repeats"].max()) if "repeats" in ok and ok["repeats"].notna().any() else 1
    how = "after an untimed warm-up per model and shape" if warm else \
        "without warm-up (first runs carry one-off costs)"
    each = f"the median of {repeats} timed runs" if repeats > 1 else "one timed run"
    return f"Times: each row is {each}, {how}; model loading is not included."


def kid_text(kid: float, std: float) -> str:
    """KID, with its spread over subsets where the subsets differ."""
    return fmt(kid) if std != std else f"{fmt(kid)} ± {fmt(std, 2)}"


def _markdown(df) -> str:
    """A DataFrame as a Markdown table (index first)."""
    head = [df.index.name or ""] + [str(c) for c in df.columns]
    rows = [[str(i)] + [f"{v:g}" if isinstance(v, float) else str(v) for v in r]
            for i, r in zip(df.index, df.itertuples(index=False))]
    return "\n".join("| " + " | ".join(r) + " |" for r in
                     [head, ["---"] * len(head)] + rows)


def fid_reading(table, real, crop: int | None = None, weights=None, device="auto",
                cmmd=None) -> str:
    """FID and KID per model of a sweep's images against a folder of ``real`` photographs
    (whole images, and with ``crop`` crops at native resolution), in Markdown; with ``cmmd``
    (a CLIP name for pegu.lab.judges.load_embedder, "tiny", or a loaded embedder) CMMD
    beside them; a line saying so when no folder is given. See :func:`pegu.iqa.fid_kid`
    and :func:`pegu.iqa.cmmd`."""
    import pandas as pd

    if not real:
        return "No folder of real photographs given (`real_photos`): FID, KID and CMMD skipped."
    check_crop(crop)
    ok = table[(table["status"] == "ok") & table["image"].notna()]
    net = inception(weights, device)
    real_images = images_in(real)
    reference = features(real_images, net, crop)  # once, for every model
    embedder = None
    if cmmd:
        embedder = cmmd if isinstance(cmmd, judges.ClipEmbedder) else judges.load_embedder(
            cmmd, device=device)
        reference_emb = embeddings(real_images, embedder, crop)
    rows = []
    for model, group in ok.groupby("model", sort=True):
        if len(group) < 2:
            rows.append({"model": model, "images": len(group), "FID": "needs ≥ 2 images"})
            continue
        mine = images_in(list(group["image"]))
        r = compare(features(mine, net, crop), reference, KID_SUBSETS)
        row = {"model": model, "images": len(group), "FID": fmt(r["fid"], 4),
               "KID": kid_text(r["kid"], r["kid_std"])}
        if embedder is not None:
            c = compare_cmmd(embeddings(mine, embedder, crop), reference_emb)
            row.update(CMMD=fmt(c["cmmd"], 4), CMMD_unbiased=fmt(c["cmmd_unbiased"], 4))
        if crop:
            row.update({"crops": r["n_crops_generated"], "FID_crop": fmt(r["fid_crop"], 4),
                        "KID_crop": kid_text(r["kid_crop"], r["kid_crop_std"])})
            if embedder is not None:
                row.update(CMMD_crop=fmt(c["cmmd_crop"], 4),
                           CMMD_crop_unbiased=fmt(c["cmmd_crop_unbiased"], 4))
        rows.append(row)
    n_real = reference["n"]
    fewest = min(len(g) for _, g in ok.groupby("model")) if len(ok) else 0
    head = (f"FID and KID against {n_real} real photographs (Inception-v3 features; lower "
            "is better" + (f"; crops of {crop}² at native resolution" if crop else "") + "). "
            + (f"From fewer than {FID_FULL_RANK:,} images (here {fewest}) FID is strongly "
               "biased upward (its 2,048-dimensional covariance is rank deficient): compare "
               "models only at the same number of images, and read no ranking into "
               "differences of a few points. " if fewest < FID_FULL_RANK else "")
            + "KID is unbiased; its ± is the spread over random subsets, absent where every "
            "subset holds every image"
            + (f". CMMD: MMD of CLIP ViT-L/14-336 embeddings (×1000, lower is better); "
               f"{CMMD_CAVEAT}" if embedder is not None else "") + ":")
    return head + "\n\n" + _markdown(pd.DataFrame(rows).set_index("model").fillna(""))

