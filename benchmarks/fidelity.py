"""Upscaler fidelity on real photographs; prints a table (not a test).

    .venv/bin/python benchmarks/fidelity.py [--factor 4] [--size 256]

Each scikit-image photograph (center crop of --size) is downscaled by --factor (antialiased
bicubic) and upscaled back by each offline Real-ESRGAN model, bicubic and Lanczos; PSNR (dB)
and SSIM against the original, higher is better for both.
"""
from __future__ import annotations

import argparse

import pandas as pd


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--photos", nargs="+", default=["astronaut", "coffee", "chelsea"])
    args = ap.parse_args(argv)

    from PIL import Image
    from skimage import data

    import pegu
    from pegu.metrics import upscaler_fidelity

    ups = [pegu.load_upscaler(n, device="cpu", offline=True) for n in
           ("RealESRGAN_x4plus", "RealESRGAN_x4plus_anime_6B", "realesr-animevideov3")]
    tables = []
    for name in args.photos:
        photo = getattr(data, name)()
        h, w = photo.shape[:2]
        s = min(args.size, h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        t = upscaler_fidelity(Image.fromarray(photo[y0:y0 + s, x0:x0 + s]), ups, args.factor)
        tables.append(t.assign(photo=name))
    table = pd.concat(tables)
    print(f"Upscaler fidelity: {args.size}² crops, down {args.factor}x and back (CPU)")
    print(table.pivot_table(index="method", columns="photo", values=["psnr_db", "ssim"],
                            sort=False).round(3).to_string())


if __name__ == "__main__":
    main()
