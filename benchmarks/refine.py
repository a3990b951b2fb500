"""Refine untiled, refine tiled (MultiDiffusion), refine tiled with the tile ControlNet and
direct generation: time and peak memory at 1024² and 2048²; prints a table (not a test).

    .venv/bin/python benchmarks/refine.py                    # tiny-sd15 on this CPU
    .venv/bin/python benchmarks/refine.py --model realistic-vision-v6 --device cuda
    .venv/bin/python benchmarks/refine.py --smoke            # 768² (wider than a tile), 2 steps: runs at all

Each row runs in its own process (peak memory is that process's: VRAM allocated by torch on
CUDA, resident set size on the CPU). Refines start from the astronaut photograph resized to
the size, strength 0.3 (ControlNet weight 1.0: the model family's tile ControlNet, the tiny
one for the tiny models); direct generation makes the size from text. Steps: --steps.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

METHODS = ("refine", "refine tiled", "refine tiled + ControlNet", "direct")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="tiny-sd15")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))
    if args.smoke:
        args.sizes, args.steps = [768], 2
    rows = []
    for size in args.sizes:
        for method in METHODS:
            job = dict(model=args.model, device=args.device, size=size, steps=args.steps,
                       method=method)
            r = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)],
                               capture_output=True, text=True)
            if r.returncode:
                print(f"{method} {size}²: failed\n{r.stderr[-1500:]}", file=sys.stderr)
                continue
            rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    import pandas as pd

    print(f"Refine and direct generation ({args.model}, {args.device}: {args.steps} denoising "
          "steps each; refine at strength 0.3)")
    print(pd.DataFrame(rows).to_string(index=False))


def _child(job: dict) -> None:
    from dataclasses import replace

    import torch
    from PIL import Image

    import pegu
    from pegu.core.device import Measure, resolve_device
    from pegu.core.settings import GenerateSettings

    dev = resolve_device(job["device"])
    g = pegu.load_generator(job["model"], device=dev)
    n = job["size"]
    s = GenerateSettings("RAW photo, portrait of a woman", steps=job["steps"], seed=0)
    photo = pegu.studies.source_image("astronaut").resize((n, n), Image.LANCZOS)
    if "ControlNet" in job["method"]:
        g._controlnet(None)  # loaded (built, for the tiny models) before the clock starts
    with Measure(dev) as m, torch.no_grad():
        if job["method"] == "direct":
            g.generate(replace(s, width=n, height=n), progress=False)
        else:
            method = job["method"]
            g.refine(photo, s, 0.3, progress=False, tiled=method.startswith("refine tiled"),
                     control=1.0 if "ControlNet" in method else None)
    print(json.dumps({"size": f"{n}²", "method": job["method"], "seconds": round(m.seconds, 2),
                      "peak_mib": round(m.peak_bytes / 2**20), "memory": m.memory_kind}))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
