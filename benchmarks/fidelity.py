"""Upscalers compared on real photographs; prints a table and saves figures (not a test).

    .venv/bin/python benchmarks/fidelity.py [--factor 4] [--figures results/fidelity]
    .venv/bin/python benchmarks/fidelity.py --model 4x-UltraSharp --model my.pth   # more
    .venv/bin/python benchmarks/fidelity.py --smoke          # tiny: checks the script runs

Each photograph (scikit-image's: astronaut, a person; coffee, chelsea, rocket) is downscaled
by --factor (antialiased bicubic) and upscaled back by every upscaler this machine has
offline (the registry's, with its weights cached, attached or in an ncnn package, and any
--model), bicubic and Lanczos. Per method and photo: PSNR (dB) and SSIM against the original
(higher is better; both reward blur over invented detail), ``detail`` (high-frequency
energy over the original's: 1 = its texture, below waxy, above sharpened or noisy) on the
whole image and ``face detail`` on the astronaut's face (a hand-marked box), seconds, and
the peak memory of the process that ran the method (each method runs in its own process).
One figure per photo: every method in full and zoomed (the face, for the astronaut).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
FACES = {"astronaut": (180, 80, 270, 175)}  # x0, y0, x1, y1 of the face, hand-marked
BASELINES = ("bicubic", "lanczos")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--photos", nargs="+", default=list(PHOTOS))
    ap.add_argument("--model", action="append", default=[],
                    help="another upscaler (registry name or file); repeatable")
    ap.add_argument("--figures", type=Path, default=Path("results/fidelity"))
    ap.add_argument("--smoke", action="store_true",
                    help="realesr-animevideov3 only, 64 px photos: checks the script runs")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))

    import pandas as pd

    from pegu.core.registry import UPSCALERS
    from pegu.sources import at_hand

    if args.smoke:
        methods, size = list(BASELINES) + ["realesr-animevideov3"], 64
    else:
        offline = [n for n, spec in UPSCALERS.items() if at_hand(spec, offline=True)]
        methods, size = list(BASELINES) + offline + args.model, 0
    rows = []
    for method in methods:
        job = dict(method=method, photos=args.photos, factor=args.factor, size=size,
                   figures=str(args.figures))
        r = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)],
                           capture_output=True, text=True)
        if r.returncode:
            print(f"{method}: failed\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        rows += json.loads(r.stdout.strip().splitlines()[-1])
    table = pd.DataFrame(rows)
    print(f"Upscalers on real photographs: down {args.factor}x (antialiased bicubic) and "
          f"back, on this machine's CPU; each method in its own process")
    print(table.pivot_table(index="method", columns="photo",
                            values=["psnr_db", "ssim", "detail"], sort=False)
          .round(3).to_string())
    summary = table.groupby("method", sort=False).agg(
        psnr_db=("psnr_db", "mean"), ssim=("ssim", "mean"), detail=("detail", "mean"),
        face_detail=("face_detail", "first"), seconds=("seconds", "sum"),
        peak_mib=("peak_mib", "first"))
    print("\nMeans over the photos (seconds: all photos; face detail: the astronaut's face)")
    print(summary.round(3).to_string())
    print(f"\nFigures: {args.figures}/<photo>.png")
    _figures(args, methods)


def _prepared(name: str, factor: int, size: int):
    """(original, downscaled) PIL images of scikit-image photo ``name``."""
    from PIL import Image
    from skimage import data

    photo = Image.fromarray(getattr(data, name)()).convert("RGB")
    if size:
        photo = photo.resize((size, size), Image.BICUBIC)
    w, h = photo.width // factor * factor, photo.height // factor * factor
    photo = photo.crop((0, 0, w, h))
    return photo, photo.resize((w // factor, h // factor), Image.BICUBIC, reducing_gap=None)


def _child(job: dict) -> None:
    """One method over every photo, in this process: rows as one JSON line."""
    import time

    import torch
    from PIL import Image

    import pegu
    from pegu.core.device import peak_rss
    from pegu.lab.metrics import detail_ratio, psnr, ssim

    method = job["method"]
    if method in BASELINES:
        kind = Image.BICUBIC if method == "bicubic" else Image.LANCZOS
        run = lambda small, size: small.resize(size, kind)  # noqa: E731
    else:
        up = pegu.load_upscaler(method, device="cpu", offline=True)
        run = lambda small, size: up.upscale(small, target=size)  # noqa: E731
        run(Image.new("RGB", (32, 32)), (128, 128))  # warm-up, untimed
    rows = []
    figures = Path(job["figures"])
    for name in job["photos"]:
        photo, small = _prepared(name, job["factor"], job["size"])
        t0 = time.perf_counter()
        with torch.no_grad():
            out = run(small, photo.size)
        seconds = time.perf_counter() - t0
        face = FACES.get(name) if not job["size"] else None
        rows.append({"method": method, "photo": name, "psnr_db": round(psnr(photo, out), 3),
                     "ssim": round(ssim(photo, out), 4),
                     "detail": round(detail_ratio(photo, out), 3),
                     "face_detail": round(detail_ratio(photo, out, face), 3) if face else None,
                     "seconds": round(seconds, 3)})
        (figures / "parts").mkdir(parents=True, exist_ok=True)
        out.save(figures / "parts" / f"{name}__{Path(method).stem}.png")
    peak = peak_rss() / 2**20
    for r in rows:
        r["peak_mib"] = round(peak)
    print(json.dumps(rows))


def _figures(args, methods) -> None:
    """Per photo, the demo's figure: every method in full and zoomed."""
    from PIL import Image

    from pegu.lab.plots import close, side_by_side

    for name in args.photos:
        images = {}
        for m in methods:
            part = args.figures / "parts" / f"{name}__{Path(m).stem}.png"
            if part.exists():
                images[m] = Image.open(part)
        if not images:
            continue
        w, h = next(iter(images.values())).size
        face = FACES.get(name) if not args.smoke else None
        zoom = ((face[0] / w, face[1] / h, (face[2] - face[0]) / min(w, h)) if face
                else (0.4, 0.4, 0.2))
        close(side_by_side(images, args.figures / f"{name}.png", zoom=zoom,
                           title=f"{name}: down {args.factor}x and back"))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
