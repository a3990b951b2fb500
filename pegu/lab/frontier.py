"""The efficiency frontier: every variant of a sweep (model, distillation or steps, DeepCache,
ToMe, way to the target) with its time and quality and their intervals, and the variants no
other beats on both (the Pareto frontier)."""
from __future__ import annotations

import copy

from .check import flag
from .studies import MIN_FOR_INTERVAL, bootstrap_ci, fmt
from .sweep import sweep

# the first one measured is used: a human-preference score where the grid's iqa list has
# one (pegu.lab.judges), else CLIP's, else sharpness
QUALITY = ("iqa.hpsv2.1", "iqa.imagereward", "iqa.pickscore", "iqa.tiny-hpsv2.1",
           "iqa.tiny-imagereward", "iqa.tiny-pickscore",
           "clip_realism", "clip_score", "sharpness")


def frontier_grid(grid: dict, distill=("",), deepcache=(0,), tome=(0,),
                  ways=("upscale",)) -> dict:
    """``grid`` with the frontier's axes: the distillations ("" for none), DeepCache
    intervals and ToMe ratios (0 for off) and ways to the target ("upscale", "tiled
    refine", "direct"). Timed runs: a warm-up first, as every comparison of seconds needs."""
    g = copy.deepcopy(grid)
    g.update(distill=[d or None for d in distill], deepcache=[c or None for c in deepcache],
             tome=[t or None for t in tome], ways=list(ways))
    g.setdefault("timing", {"warmup": True, "repeats": 1})
    return g


def sweep_frontier(grid: dict, out, *, distill=("",), deepcache=(0,), tome=(0,),
                   ways=("upscale",), **kwargs):
    """The sweep of :func:`frontier_grid` into ``out`` (``kwargs``: pegu.sweep.sweep's);
    an empty table when ``distill`` is empty (the frontier skipped)."""
    import pandas as pd

    if not distill:
        return pd.DataFrame({"status": []})
    return sweep(frontier_grid(grid, distill, deepcache, tome, ways), out, **kwargs)


def way(row) -> str:
    """How a row reached its target: "direct", "tiled refine", "refine" or "upscale"."""
    if row.get("mode") == "direct":
        return "direct"
    if row.get("refine_tiled") is True:
        return "tiled refine"
    refine = row.get("refine")
    return "refine" if refine is not None and refine == refine else "upscale"


def variant(row) -> str:
    """A variant's name: model · distillation (or steps) · speed-ups · way."""
    d = row.get("generate.distill")
    parts = [str(row["model"]), d if isinstance(d, str) and d else
             f"{int(row['generate.steps'])} steps"]
    c, t = row.get("generate.deepcache"), row.get("generate.tome")
    if c is not None and c == c:
        parts.append(f"DeepCache {int(c)}")
    if t is not None and t == t:
        parts.append(f"ToMe {t:g}")
    return " · ".join(parts + [way(row)])


def quality_of(table) -> str | None:
    """The quality column the frontier reads: the first of QUALITY the table measured."""
    return next((q for q in QUALITY if q in table and table[q].notna().any()), None)


def frontier(table, quality: str | None = None):
    """Per variant (successful rows only): n, mean seconds and ``quality`` (default
    :func:`quality_of`) with 95% bootstrap intervals over prompts × seeds, and ``pareto``:
    no other variant is at least as fast and at least as good, and better in one. Sorted by
    time."""
    import pandas as pd

    ok = table[table["status"] == "ok"]
    quality = quality or quality_of(ok)
    rows = []
    for name, group in ok.groupby(ok.apply(lambda r: variant(r.to_dict()), axis=1), sort=False):
        row = {"variant": name, "n": len(group)}
        for col in ("seconds", quality) if quality else ("seconds",):
            v = pd.to_numeric(group[col], errors="coerce")
            row[col] = float(v.mean())
            row[f"{col}.lo"], row[f"{col}.hi"] = bootstrap_ci(v)
        rows.append(row)
    out = pd.DataFrame(rows).sort_values("seconds", kind="stable").reset_index(drop=True)
    best = float("-inf")
    pareto = []
    for _, r in out.iterrows():
        q = r[quality] if quality else -r["seconds"]
        pareto.append(bool(q > best))
        best = max(best, q)
    out["pareto"] = pareto
    out.attrs["quality"] = quality
    return out


def frontier_reading(table, quality: str | None = None) -> str:
    """The frontier in Markdown: a table of the variants (time, quality, intervals, on the
    frontier or not), the variants on it named, and how much faster the fastest is than the
    best, with whether their quality differs measurably."""
    f = frontier(table, quality)
    if not len(f):
        return "No successful runs: no frontier."
    q = f.attrs["quality"]

    def cell(r, col):
        lo, hi = r[f"{col}.lo"], r[f"{col}.hi"]
        return fmt(r[col]) + ("" if lo != lo else f" [{fmt(lo)}, {fmt(hi)}]")

    head = ["variant", "n", "seconds per image (lower is better)"] + \
        ([f"{q} (higher is better){flag(q)}"] if q else []) + ["on the frontier"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in f.iterrows():
        lines.append("| " + " | ".join([r["variant"], str(r["n"]), cell(r, "seconds")]
                                       + ([cell(r, q)] if q else [])
                                       + ["yes" if r["pareto"] else ""]) + " |")
    front = f[f["pareto"]]
    text = [f"**Efficiency frontier** ({len(f)} variants; means with 95% bootstrap intervals "
            f"over prompts × seeds from {MIN_FOR_INTERVAL} runs per variant up)", "",
            *lines, "", "On the frontier (no variant is both faster and better): "
            + ", ".join(front["variant"]) + "."]
    if q and len(f) > 1:
        fast, good = f.iloc[0], f.loc[f[q].idxmax()]
        if fast["variant"] != good["variant"]:
            ratio = good["seconds"] / fast["seconds"]
            overlap = fast[f"{q}.lo"] != fast[f"{q}.lo"] or good[f"{q}.lo"] != good[
                f"{q}.lo"] or fast[f"{q}.hi"] >= good[f"{q}.lo"]
            text.append(f"The fastest, {fast['variant']}, takes {fmt(1 / ratio)}× the time of "
                        f"the best by {q}, {good['variant']}; "
                        + ("their quality intervals overlap or are missing: no measured "
                           "difference in quality." if overlap else
                           f"the best is measurably better ({fmt(good[q])} against "
                           f"{fmt(fast[q])})."))
    return "\n".join(text)
