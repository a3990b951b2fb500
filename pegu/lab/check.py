"""The sanity check every quality metric must pass before a table trusts it: on real
photographs of people and their damaged copies (blur, JPEG at quality 20, noise, 4× bicubic
down and up, an x4 upscaler's output from the 4× smaller copy), the share of pairs a metric
orders correctly (the photograph better), on whole images and on crops at native
resolution. A metric below :data:`PASS` on either, or fooled by one damage (below
:data:`FOOLED` on it: it prefers the damaged copy), is flagged in every table that shows it
(the verdicts are kept in ``<pegu cache>/metric-check.json``).

The photographs of people that ship with pegu's dependencies, public domain: scikit-image's
``astronaut`` (Eileen Collins, NASA) and ``camera`` (the cameraman, MIT), and matplotlib's
``grace_hopper`` (US Navy). ``pegu iqa --check`` runs it; notebook 01 shows it.
"""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np

from ..core.errors import BadInput
from ..core.images import atomic_write
from ..sources import cache_dir
from ..upscale import load_upscaler
from . import iqa as Q
from . import judges as J
from . import metrics as M

PASS = 0.8  # the share of pairs a metric must order correctly, whole and on crops
FOOLED = 0.5  # below this share on one damage, the metric prefers that damage: it fails
DAMAGES = ("blur", "jpeg q20", "noise", "bicubic 4x down-up", "x4 upscaler")
CAPTIONS = {"astronaut": "a photograph of a woman astronaut in an orange spacesuit",
            "cameraman": "a black and white photograph of a man with a camera on a tripod",
            "grace hopper": "a photograph of a woman in a navy uniform"}
WEIGHT_FREE = ("sharpness", "noise")  # pegu's own statistics (pegu.metrics)
DEFAULT = WEIGHT_FREE + ("piqe", "entropy")  # what runs with no weights at all
BLUR_RADIUS, JPEG_QUALITY, NOISE_SIGMA, FACTOR = 2.0, 20, 15.0, 4


def people_photos() -> dict:
    """{name: PIL RGB image} of the real photographs of people at hand offline."""
    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    hopper = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    return {"astronaut": Image.fromarray(data.astronaut()),
            "cameraman": Image.fromarray(data.camera()).convert("RGB"),
            "grace hopper": hopper.convert("RGB")}


def damaged(photo, upscaler=None, seed: int = 0) -> dict:
    """{damage: copy of ``photo`` (PIL RGB) at its size}: Gaussian blur (radius 2 px), JPEG
    at quality 20, Gaussian noise (σ = 15 of 255, seeded), 4× bicubic down then up, and with
    ``upscaler`` (a loaded pegu Upscaler) its output from the 4× smaller copy."""
    from PIL import Image, ImageFilter

    photo = photo.convert("RGB")
    w, h = photo.size
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=JPEG_QUALITY)
    noise = np.random.default_rng(seed).normal(0, NOISE_SIGMA, (h, w, 3))
    small = photo.resize((w // FACTOR, h // FACTOR), Image.BICUBIC)
    out = {"blur": photo.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)),
           "jpeg q20": Image.open(io.BytesIO(buf.getvalue())).convert("RGB"),
           "noise": Image.fromarray(np.clip(np.asarray(photo) + noise, 0, 255)
                                    .round().astype(np.uint8)),
           "bicubic 4x down-up": small.resize((w, h), Image.BICUBIC)}
    if upscaler is not None:
        out["x4 upscaler"] = upscaler.upscale(small, target=(w, h)).convert("RGB")
    return out


def _crops(image, size: int) -> list:
    return [image.crop(box) for box in Q.crop_boxes(*image.size, size)]


def scorers(metrics, clip=None, device="auto") -> dict:
    """{column name: (score(images, prompts) -> list, higher is better)} for ``metrics``:
    "sharpness", "noise", "clip_realism" (with ``clip``), a judge of pegu.lab.judges
    ("hpsv2.1", "pickscore"; "tiny-…" for stand-ins) or a pyiqa no-reference metric."""
    out = {}
    for name in metrics:
        if name == "sharpness":
            out[name] = (lambda ims, p: [M.sharpness(i) for i in ims], True)
        elif name == "noise":
            out[name] = (lambda ims, p: [M.noise_level(i) for i in ims], False)
        elif name == "clip_realism":
            if clip is None:
                raise BadInput("clip_realism needs a CLIP model: pass clip= (notebook 01: "
                               "clip_model), or leave clip_realism out of the metrics")
            out[name] = (lambda ims, p: M.clip_realism(clip, ims), True)
        elif name.removeprefix("tiny-") in J.PER_IMAGE:
            judge = J.load_judge(name.removeprefix("tiny-"), device=device,
                                 tiny=name.startswith("tiny-"))
            out[f"iqa.{name}"] = (judge.score, True)
        else:
            Q.check_metrics([name])
            metric = Q.load_metric(name, device=device)
            out[f"iqa.{name}"] = (lambda ims, p, metric=metric: Q.metric_scores(metric, ims),
                                  not Q.lower_better(name))
    return out


def sanity_check(metrics=WEIGHT_FREE, photos=None, upscaler=None, crop: int = 224,
                 clip=None, device="auto", save: bool = True):
    """How often each metric ranks a real photograph above its damaged copy.

    metrics: names (see :func:`scorers`); clip: a CLIP (name or loaded) for clip_realism.
    photos: {name: image} (default
    :func:`people_photos`); their captions are the prompts text-aware metrics read
    (:data:`CAPTIONS`, else "a photograph of a person"). upscaler: a loaded Upscaler for the
    "x4 upscaler" damage, or its name (None / "": that damage is left out). crop: crop size in px.
    Returns a DataFrame, one row per metric and damage plus an "all" row per metric:
    pairs, whole (share ordered correctly, 0–1, higher is better), crop_pairs, crops,
    passed (a damage: both shares at least :data:`FOOLED`; "all": both at least
    :data:`PASS` and no damage failed). With ``save`` the verdicts are kept for
    :func:`flag`.
    """
    import pandas as pd

    photos = photos if photos is not None else people_photos()
    if not photos:
        raise BadInput("the sanity check needs at least one photograph")
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    clip = M.as_clip(clip, device=device) if "clip_realism" in metrics else None
    if isinstance(upscaler, str):
        upscaler = load_upscaler(upscaler, device=device) if upscaler else None
    photos = {n: p.convert("RGB") for n, p in photos.items()}
    copies = {n: damaged(p, upscaler) for n, p in photos.items()}
    prompts = {n: CAPTIONS.get(n, "a photograph of a person") for n in photos}
    rows = []
    for column, (score, higher) in scorers(metrics, clip, device).items():
        # each photograph, whole and its crops, scored once against all its copies
        real = {n: score([p] + _crops(p, crop), prompts[n]) for n, p in photos.items()}
        for damage in [d for d in DAMAGES if any(d in c for c in copies.values())]:
            whole, cropped = [], []
            for name in photos:
                bad = copies[name][damage]
                s = score([bad] + _crops(bad, crop), prompts[name])
                pairs = [(x > y if higher else x < y) for x, y in zip(real[name], s)]
                whole.append(pairs[0])
                cropped += pairs[1:]
            rows.append({"metric": column, "damage": damage, "pairs": len(whole),
                         "whole": float(np.mean(whole)), "crop_pairs": len(cropped),
                         "crops": float(np.mean(cropped)), "_w": whole, "_c": cropped})
        mine = [r for r in rows if r["metric"] == column]
        w = [v for r in mine for v in r["_w"]]
        c = [v for r in mine for v in r["_c"]]
        rows.append({"metric": column, "damage": "all", "pairs": len(w),
                     "whole": float(np.mean(w)), "crop_pairs": len(c),
                     "crops": float(np.mean(c))})
    table = pd.DataFrame(rows).drop(columns=["_w", "_c"])
    # a damage a metric prefers more often than not fools it; the "all" row passes at PASS
    # overall with no damage that fools it
    table["passed"] = (table["whole"] >= FOOLED) & (table["crops"] >= FOOLED)
    for metric, part in table.groupby("metric", sort=False):
        alls = part["damage"] == "all"
        table.loc[part.index[alls], "passed"] = bool(
            (part.loc[alls, ["whole", "crops"]] >= PASS).all(axis=None)
            and part.loc[~alls, "passed"].all())
    if save:
        record(table, list(photos), crop)
    return table


def check_path() -> Path:
    """Where the verdicts are kept: ``<pegu cache>/metric-check.json``."""
    return cache_dir() / "metric-check.json"


def verdicts() -> dict:
    """{column: verdict} of the last checks (empty when none ran or the file is damaged)."""
    try:
        data = json.loads(check_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(table, photos, crop: int) -> None:
    """Keep each metric's "all" row as its verdict (merged with earlier ones)."""
    kept = verdicts()
    for r in table[table["damage"] == "all"].itertuples():
        kept[r.metric] = {"whole": round(r.whole, 4), "crops": round(r.crops, 4),
                          "pairs": int(r.pairs), "crop_pairs": int(r.crop_pairs),
                          "passed": bool(r.passed), "photos": list(photos), "crop": crop,
                          "checked": time.strftime("%Y-%m-%d")}
    path = check_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(kept, indent=1)))


def flag(column: str, short: bool = False) -> str:
    """"" for a metric that passed or was never checked; else what a table says beside it
    (``short``: a column header's mark)."""
    v = verdicts().get(column)
    if not isinstance(v, dict) or v.get("passed", True):
        return ""
    if short:
        return " ⚠"
    return (f" ⚠ failed pegu's sanity check ({v.get('whole', float('nan')):.0%} of whole, "
            f"{v.get('crops', float('nan')):.0%} of crop pairs ordered right; pegu iqa --check)")


def reading(table) -> str:
    """The check as Markdown: per metric the share of pairs ordered right, by damage."""
    order = list(dict.fromkeys(table["metric"]))
    wide = table.pivot(index="metric", columns="damage", values="whole").reindex(order)
    cols = [d for d in DAMAGES if d in wide] + ["all"]
    alls = table[table["damage"] == "all"].set_index("metric")
    lines = ["| metric | " + " | ".join(cols) + " | crops (all) | verdict |",
             "|---" * (len(cols) + 3) + "|"]
    for m in wide.index:
        cells = [f"{wide.at[m, c]:.0%}" for c in cols]
        verdict = "passes" if alls.at[m, "passed"] else "**fails**"
        lines.append(f"| {m} | " + " | ".join(cells)
                     + f" | {alls.at[m, 'crops']:.0%} | {verdict} |")
    n = int(alls["pairs"].iloc[0]) if len(alls) else 0
    return (f"Share of real-photo vs damaged-copy pairs each metric orders right (higher is "
            f"better; {n} whole-image pairs per metric; a metric passes at {PASS:.0%} on whole "
            f"images and on crops with no damage it prefers, below {FOOLED:.0%}):\n\n"
            + "\n".join(lines))
