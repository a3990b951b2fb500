"""The ``pegu`` command."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _size(text: str) -> tuple[int, int]:
    """'2048x2048' or '2048' -> (2048, 2048)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        w, h = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        w = h = 0
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 2048x2048, got {text!r}")
    return w, h


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="pegu", description=(
        "Performance-Efficient Generative Upscaling: generate at a model's native size, "
        "upscale with Real-ESRGAN, measure what it costs."))
    p.add_argument("--version", action="version", version=f"pegu {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    u = sub.add_parser("upscale", help="upscale images with a Real-ESRGAN model",
                       description="Upscale images; writes <stem>_<model>_<size>.png files.")
    u.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    u.add_argument("--model", default="RealESRGAN_x4plus",
                   help="registry name (see `pegu models`) or a .pth/.safetensors file")
    how = u.add_mutually_exclusive_group()
    how.add_argument("--scale", type=float, help="output = input x SCALE (default: the model's)")
    how.add_argument("--target", type=_size, metavar="WxH", help="exact output size")
    u.add_argument("--fit", choices=("cover", "contain"),
                   help="for a target of another aspect ratio: crop (cover) or pad (contain)")
    u.add_argument("--tile", type=int, default=None,
                   help="tile edge in input px (0 = untiled; default 512 on CUDA, 256 on CPU)")
    u.add_argument("--tile-overlap", type=int, default=32, help="px shared by neighbouring tiles")
    u.add_argument("--denoise", type=float, help="realesr-general-x4v3 only: 0..1")
    u.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    u.add_argument("--dtype", default="auto", help="auto, fp32, fp16 (CUDA), bf16")
    u.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")
    u.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    u.add_argument("--offline", action="store_true", help="never download weights")

    m = sub.add_parser("models", help="list the models pegu knows")
    m.set_defaults(offline=False)

    d = sub.add_parser("demo", help="pegu's main job on this machine, offline",
                       description="Upscale a real photograph (scikit-image's astronaut) to "
                       "the target with Real-ESRGAN x4plus beside bicubic and Lanczos; save "
                       "the images and a comparison figure; print times and peak memory.")
    d.add_argument("--input-size", type=int, default=512, help="photo crop edge in px")
    d.add_argument("--target", type=_size, default=(2048, 2048), metavar="WxH")
    d.add_argument("--upscaler", default="RealESRGAN_x4plus")
    d.add_argument("--device", default="auto")
    d.add_argument("--out", type=Path, default=Path("out/demo"))
    d.add_argument("--online", action="store_true",
                   help="allow downloading official weights (default: offline copies only)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"upscale": _upscale, "models": _models, "demo": _demo}[args.command](args)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as e:
        print(f"pegu {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _upscale(args) -> int:
    from tqdm.auto import tqdm

    from .images import ensure_writable_dir, read_image, write_png
    from .registry import upscaler_spec

    # everything that can be wrong is checked before the model loads
    images = [read_image(p) for p in args.images]
    model_path = Path(args.model).expanduser()
    label = model_path.stem if model_path.suffix else upscaler_spec(args.model).name
    if args.target:
        tag = f"{args.target[0]}x{args.target[1]}"
    else:
        tag = f"x{args.scale:g}" if args.scale else "x"
    outputs = []
    for p in args.images:
        o = args.out / f"{p.stem}_{label}_{tag}.png"
        if o in outputs:
            raise ValueError(f"two inputs would both write {o}; rename one")
        if o.exists() and not args.overwrite:
            raise ValueError(f"{o} exists; pass --overwrite to replace it")
        outputs.append(o)
    ensure_writable_dir(args.out)
    from .upscale import load_upscaler

    up = load_upscaler(args.model, device=args.device, dtype=args.dtype,
                       tile="auto" if args.tile is None else args.tile,
                       tile_overlap=args.tile_overlap, denoise=args.denoise,
                       offline=True if args.offline else None)
    if tag == "x":  # the model's own scale, now known
        outputs = [o.with_name(o.name.replace("_x.png", f"_x{up.scale}.png")) for o in outputs]
        for o in outputs:
            if o.exists() and not args.overwrite:
                raise ValueError(f"{o} exists; pass --overwrite to replace it")
    print(f"{up.name} x{up.scale} on {up.device} ({str(up.dtype).removeprefix('torch.')}), "
          f"weights: {up.source}", file=sys.stderr)
    for image, src, dst in tqdm(list(zip(images, args.images, outputs)), desc="images",
                                unit="image", disable=len(images) < 2):
        r = up.run(image, scale=args.scale, target=args.target, fit=args.fit, progress=True)
        write_png(r.image, dst)
        print(f"{src} -> {dst}  {_dims(r.image)}  {r.seconds:.1f} s, tile {r.tile or 'none'}")
    return 0


def _dims(image) -> str:
    w, h = (image.size if hasattr(image, "size") and not hasattr(image, "shape")
            else (image.shape[1], image.shape[0]))
    return f"{w}x{h}"


def _models(args) -> int:
    from .registry import GENERATORS, UPSCALERS
    from .weights import cache_dir, ncnn_files

    print("Text-to-image models")
    print(f"  {'name':22} {'family':6} {'native':>6}  {'available':12}  source")
    for g in GENERATORS.values():
        where = _generator_availability(g)
        print(f"  {g.name:22} {g.family:6} {g.native:>6}  {where:12}  "
              f"{g.repo or 'built in code'}  ({g.description})")
    print(f"\nUpscalers (cache: {cache_dir() / 'upscalers'})")
    print(f"  {'name':28} {'scale':>5}  {'arch':5}  {'available':18}  description")
    for s in UPSCALERS.values():
        if (cache_dir() / "upscalers" / s.filename).is_file():
            where = "cached"
        elif s.ncnn and ncnn_files(s.ncnn):
            where = "offline copy"
        else:
            where = "download"
        print(f"  {s.name:28} {'x' + str(s.scale):>5}  {s.arch:5}  {where:18}  {s.description}")
    return 0


def _generator_availability(spec) -> str:
    """"cached" when the weights are on this machine, else where they would come from."""
    from .generate import kaggle_model_dir
    from .weights import cache_dir

    if spec.tiny:
        built = (cache_dir() / "generators" / spec.name / "model_index.json").is_file()
        return "cached" if built else "built on use"
    if kaggle_model_dir(spec.repo) is not None:
        return "kaggle input"
    from huggingface_hub import scan_cache_dir

    try:
        cached = {r.repo_id for r in scan_cache_dir().repos}
    except Exception:  # no cache folder yet
        cached = set()
    return "cached" if spec.repo in cached else "download"


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(input_size=args.input_size, target=args.target, upscaler=args.upscaler,
             device=args.device, out=args.out, offline=not args.online)
    return 0


if __name__ == "__main__":
    sys.exit(main())
