"""What each ``pegu`` command does: the library called with the parsed arguments."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

from .. import __version__
from ..core.device import check_output_memory
from ..core.errors import BadInput, MissingFile, OutputExists
from ..core.geometry import plan_size
from ..core.images import atomic_write, ensure_writable_dir, read_image, write_png
from ..core.registry import CONTROLNETS, DISTILLATIONS, GENERATORS, UPSCALERS, upscaler_spec
from ..core.settings import FaceSettings, GenerateSettings, RunSettings
from ..lab import check
from ..lab import iqa as iq
from ..lab.plots import sweep_plots
from ..lab.studies import FID_FULL_RANK, fmt, kid_text
from ..lab.sweep import merge as merge_sweeps
from ..lab.sweep import notebook_sweep, short_run
from ..lab.sweep import sweep as run_sweep
from ..pipeline import read_record, read_settings, run, run_many
from ..sources import availability, cache_dir, file_availability
from ..upscale import auto_upscaler, load_upscaler
from . import kernels
from .kaggle import KAGGLE_EXTRAS
from .demo import run_demo
from .doctor import checks, report


def upscale(args) -> int:
    # everything that can be wrong is checked before the model loads
    images = [read_image(p) for p in args.images]
    plans = [plan_size(image_size(image), scale=args.scale, target=args.target, fit=args.fit)
             for image in images]  # sizes and fit
    for (target, _, _) in plans:  # the output's memory (without --scale/--target: x4)
        check_output_memory(target, "cuda")
    model = args.model
    if model == "auto":  # the least work that reaches the largest factor asked for
        widest = max(zip(images, plans), key=lambda ip: ip[1][0][0] / image_size(ip[0])[0])
        target = widest[1][0] if args.scale or args.target else None
        model = auto_upscaler(image_size(widest[0]), target, args.offline)[0]
    model_path = Path(model).expanduser()
    label = model_path.stem if model_path.suffix else upscaler_spec(model).name
    if args.target:
        tag = f"{args.target[0]}x{args.target[1]}"
    else:
        tag = f"x{args.scale:g}" if args.scale else "x"
    outputs = []
    for p in args.images:
        o = args.out / f"{p.stem}_{label}_{tag}.png"
        if o in outputs:
            raise BadInput(f"two inputs would both write {o}; rename one")
        if o.exists() and not args.overwrite:
            raise OutputExists(f"{o} exists; pass --overwrite to replace it")
        outputs.append(o)
    ensure_writable_dir(args.out)
    up = load_upscaler(model, device=args.device, dtype=args.dtype,
                       tile="auto" if args.tile is None else args.tile,
                       tile_overlap=args.tile_overlap, denoise=args.denoise,
                       offline=args.offline, engine=args.engine,
                       batch="auto" if args.batch is None else args.batch,
                       compile=args.compile)
    if tag == "x":  # the model's own scale, now known
        outputs = [o.with_name(o.name.replace("_x.png", f"_x{up.scale}.png")) for o in outputs]
        for o in outputs:
            if o.exists() and not args.overwrite:
                raise OutputExists(f"{o} exists; pass --overwrite to replace it")
    print(f"{up.name} x{up.scale} on {up.device} ({up.dtype_name}, {up.engine}), "
          f"weights: {up.source}", file=sys.stderr)
    for image, src, dst in tqdm(list(zip(images, args.images, outputs)), desc="images",
                                unit="image", disable=len(images) < 2):
        r = up.run(image, scale=args.scale, target=args.target, fit=args.fit, progress=True)
        write_png(r.image, dst)
        print(f"{src} -> {dst}  {dims(r.image)}  {r.seconds:.1f} s, tile {r.tile or 'none'}")
        if r.note:
            print(f"  note: {r.note}")
        if r.fallback:
            print(f"  note: {r.fallback}")
    return 0


def image_size(image) -> tuple[int, int]:
    """(width, height) of a PIL image or a numpy array."""
    return (image.size if hasattr(image, "size") and not hasattr(image, "shape")
            else (image.shape[1], image.shape[0]))


def dims(image) -> str:
    return "{}x{}".format(*image_size(image))


def models(args) -> int:
    print("Text-to-image models")
    print(f"  {'name':22} {'family':6} {'native':>6}  {'available':12}  source")
    for g in GENERATORS.values():
        print(f"  {g.name:22} {g.family:6} {g.native:>6}  {availability(g):12}  "
              f"{g.repo or 'built in code'}  ({g.description})")
        if g.sizes:
            print(f"  {'':22} {'':6} {'':>6}  {'':12}  its card's sizes: "
                  + ", ".join(f"{w}x{h}" for w, h in g.sizes))
    print("\nTile ControlNets (the refine's --refine-control)")
    print(f"  {'name':22} {'family':6} {'available':12}  source  description [licence]")
    for c in CONTROLNETS.values():
        print(f"  {c.name:22} {c.family:6} {availability(c):12}  "
              f"{c.repo or 'built in code'}  {c.description} [{c.licence}]")
    print("\nFew-step distillations (--distill; sampler, steps and guidance from each card)")
    print(f"  {'name':13} {'family':6} {'available':12}  sampler, steps, guidance  [licence]")
    for d in DISTILLATIONS.values():
        lo, hi = d.guidance_range
        for family, w in d.files:
            print(f"  {d.name:13} {family:6} {file_availability(w):12}  {d.scheduler}, "
                  f"{d.steps}, {d.guidance:g} ({lo:g}-{hi:g})  [{d.licence}]")
    print(f"\nUpscalers (cache: {cache_dir() / 'upscalers'})")
    print(f"  {'name':28} {'scale':>5}  {'arch':7}  {'available':18}  description [licence]")
    for s in UPSCALERS.values():
        print(f"  {s.name:28} {'x' + str(s.scale):>5}  {s.arch:7}  {availability(s):18}  "
              f"{s.description} [{s.licence}]")
    return 0


def demo(args) -> int:
    run_demo(model=args.model, target=args.target, upscaler=args.upscaler,
             photo_size=args.photo_size, device=args.device, out=args.out,
             offline=not args.online)
    return 0


def generate(args) -> int:
    # everything that can be wrong is checked before any model loads
    prompt = args.prompt
    if args.prompt_file is not None:
        if not args.prompt_file.is_file():
            raise MissingFile(f"prompt file not found: {args.prompt_file}")
        prompt = args.prompt_file.read_text(encoding="utf-8").strip()
    if args.from_image is not None:
        base = read_settings(args.from_image, model=args.model)
    elif prompt is None:
        raise BadInput("give a prompt, --prompt-file FILE or --from IMAGE")
    else:
        base = RunSettings(GenerateSettings(prompt))
    g = {k: v for k, v in dict(
        prompt=prompt, negative_prompt=args.negative, seed=args.seed, steps=args.steps,
        guidance=args.guidance, scheduler=args.scheduler, schedule=args.schedule,
        prompt_syntax=args.prompt_syntax,
        distill=args.distill, deepcache=args.deepcache, deepcache_branch=args.deepcache_branch,
        tome=args.tome, compile=args.compile_unet,
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
        if args.faces is None and base.faces is None:
            raise BadInput("--face-prompt, --face-padding, --max-faces, --faces-at, "
                             "--face-restore and --face-fidelity go with --faces [STRENGTH]")
        r["faces"] = dataclasses.replace(base.faces or FaceSettings(), **face)
    settings = dataclasses.replace(
        base, generate=dataclasses.replace(base.generate, **g),
        upscale=dataclasses.replace(base.upscale, **u), **r)
    if args.count < 1:
        raise BadInput(f"--count must be at least 1, got {args.count}")
    runs = [dataclasses.replace(settings, generate=dataclasses.replace(
        settings.generate, seed=settings.generate.seed + i)) for i in range(args.count)]
    out = args.out or Path("out")
    one_file = out.suffix.lower() == ".png" and not out.is_dir()  # a folder stays a folder
    if one_file and args.count > 1:
        raise BadInput("--count writes one PNG per seed: give --out a folder")
    outs = [out if one_file else out / (
        f"pegu_{Path(s.model).name}_{s.generate.seed}_{s.target[0]}x{s.target[1]}.png")
        for s in runs]
    for o in outs:
        if o.exists() and not args.overwrite:
            raise OutputExists(f"{o} exists; pass --overwrite to replace it")
    ensure_writable_dir(outs[0].parent)
    results = [run(runs[0], device=args.device, offline=args.offline)] if args.count == 1 \
        else run_many(runs, device=args.device, offline=args.offline, progress=True)
    failed = 0
    for result, o in zip(results, outs):
        for w in result.choices.warnings + result.choices.fallbacks:
            print(f"warning: {w}", file=sys.stderr)
        if result.status != "ok":
            print(result.summary(), file=sys.stderr)
            print(f"pegu generate: {result.error}", file=sys.stderr)
            failed += 1
            continue
        result.save(o, overwrite=args.overwrite)
        print(f"{result.summary()} -> {o}")
    return 1 if failed else 0


def sweep(args) -> int:
    if args.merge:
        return sweep_merge(args)
    if args.grid is None:
        raise BadInput("pegu sweep needs --grid GRID (or: pegu sweep merge DIR... --out OUT)")
    if args.notebook is not None:
        table = notebook_sweep(args.notebook, args.grid, args.out, progress=args.progress,
                               keep_failed=args.keep_failed)
    else:
        clip = None if args.no_clip else args.clip
        shard = args.shard or None  # "I/N", checked by the sweep
        if args.processes is not None and args.processes < 1:
            raise BadInput(f"--processes must be at least 1, got {args.processes}")
        table = run_sweep(args.grid, args.out, device=args.device, clip=clip, shard=shard,
                          progress=args.progress, processes=args.processes or "auto",
                          keep_failed=args.keep_failed, many=args.many, offline=args.offline,
                          time_limit_h=args.time_limit, resume_from=args.resume_from,
                          cluster=args.cluster, workers=args.workers)
    if args.shard:
        return 0
    for name, path in sweep_plots(table, args.out).items():
        print(f"  {name:16} {path}")
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    print(f"{len(table)} runs ({', '.join(f'{v} {k}' for k, v in counts.items())}) -> "
          f"{args.out / 'results.csv'}, {args.out / 'results.parquet'}")
    return 0 if counts.get("ok", 0) == len(table) and "stopped" not in table.attrs else 1


def sweep_merge(args) -> int:
    verb, *folders = args.merge
    if verb != "merge" or not folders:
        raise BadInput(f"unknown sweep action {verb!r}: `pegu sweep merge DIR... --out OUT`, "
                       "or `pegu sweep --grid GRID --out OUT`")
    table = merge_sweeps(folders, args.out, args.grid)
    missing = table.attrs["missing"]
    print(f"{len(table)} runs from {len(folders)} folders -> {args.out / 'results.csv'}")
    if missing:
        print(f"{len(missing)} runs still missing (none of the folders finished them); run "
              f"`pegu sweep --grid {args.out / 'grid.json'} --out {args.out}` to run just "
              "those:")
        for i, d in missing[:20]:
            print(f"  run {i}: {short_run(d, 50)}")
        if len(missing) > 20:
            print(f"  ... and {len(missing) - 20} more")
        return 1
    return 0


def kaggle(args) -> int:
    if args.kaggle_command == "push":
        kernels.push(args.notebooks, accelerator=args.accelerator, internet=args.internet,
                     dry_run=args.dry_run, username=args.username, staging=args.staging,
                     models=args.models, attach=args.attach, shards=args.shards,
                     resume=args.resume)
    elif args.kaggle_command in ("status", "output"):
        kernels.follow(args.notebook, args.kaggle_command, username=args.username,
                       out=getattr(args, "out", None))
    else:
        out = kernels.package(args.out, extras=() if args.no_extras else KAGGLE_EXTRAS,
                         username=args.username)
        dataset = json.loads((out / "dataset-metadata.json").read_text())["id"]
        print(f"dataset {dataset} in {out}: upload it with `kaggle datasets create -p {out}` "
              f"(a later build: `kaggle datasets version -p {out} -m \"pegu {__version__}\"`); "
              f"kernels find it under /kaggle/input/datasets/{dataset}/")
    return 0


def doctor(args) -> int:
    items = checks()
    print(report(items))
    return 1 if any(c.status == "problem" for c in items) else 0


def iqa(args) -> int:
    import pandas as pd

    if args.check:
        return iqa_check(args)
    if not args.images:
        raise BadInput("name the images (or folders) to score, or run pegu iqa --check")
    metrics = ",".join(iq.PANEL) if args.metrics is None else args.metrics
    names = [] if metrics.strip().lower() == "none" else [
        m.strip() for m in metrics.split(",") if m.strip()]
    if names:
        iq.check_metrics(names)  # before any image is read or network built
    if args.crop is not None and args.real is None:
        raise BadInput("--crop needs --real (the photographs to compare crops against)")
    if args.cmmd is not None and args.real is None:
        raise BadInput("--cmmd needs --real (the photographs to compare against)")
    if not names and args.real is None:
        raise BadInput("nothing to measure: name --metrics, or give --real for FID/KID")
    images = [f for p in args.images for f in iq.images_in(p)]
    if names:
        prompts = _prompts(images, args.prompt) if any(map(iq.is_judge, names)) else None
        table = pd.DataFrame(iq.score(images, names, device=args.device, prompts=prompts),
                             index=[str(p) for p in images])
        table.index.name = "image"
        print(table.round(4).to_string())
        if len(table) > 1:
            print("mean " + "  ".join(f"{c} {table[c].mean():.4g}" for c in table))
        print("(lower is better for " + (", ".join(
            c for c in table if iq.lower_better(c)) or "none of these") + ")")
        if args.csv:
            atomic_write(args.csv, lambda tmp: table.to_csv(tmp))
    if args.real is not None:
        r = iq.fid_kid(images, args.real, crop=args.crop, weights=args.inception,
                        device=args.device)
        print(f"FID {fmt(r['fid'], 4)}, KID {kid_text(r['kid'], r['kid_std'])} "
              f"({r['n_generated']} images against {r['n_real']} real; lower is better)")
        if args.crop:
            print(f"FID_crop {fmt(r['fid_crop'], 4)}, KID_crop "
                  f"{kid_text(r['kid_crop'], r['kid_crop_std'])} ({r['n_crops_generated']} "
                  f"{args.crop}px crops against {r['n_crops_real']})")
        if min(r["n_generated"], r["n_real"]) < FID_FULL_RANK:
            print(f"(from fewer than {FID_FULL_RANK:,} images FID is strongly biased upward: "
                  "compare only at the same number of images; KID's ± is absent where every "
                  "subset holds every image)")
        if args.cmmd is not None:
            c = iq.cmmd(images, args.real, crop=args.crop, embedder=args.cmmd,
                        device=args.device)
            print(f"CMMD {fmt(c['cmmd'], 4)} (unbiased {fmt(c['cmmd_unbiased'], 4)})"
                  + (f", CMMD_crop {fmt(c['cmmd_crop'], 4)} (unbiased "
                     f"{fmt(c['cmmd_crop_unbiased'], 4)})" if args.crop else "")
                  + f"; lower is better. ({iq.CMMD_CAVEAT}.)")
    return 0


def _prompts(images, prompt: str | None) -> list[str]:
    """The prompt each image is judged against: ``--prompt``, else its own recipe's."""
    if prompt is not None:
        return [prompt] * len(images)
    out = []
    for p in images:
        rec = read_record(p)["pegu"] if Path(p).suffix.lower() == ".png" else None
        if not rec:
            raise BadInput(f"{p} holds no pegu recipe to read its prompt from: give --prompt "
                           "(hpsv2.1, imagereward, pickscore and vqa judge an image against "
                           "its prompt)")
        out.append(rec["settings"]["generate"]["prompt"])
    return out


def iqa_check(args) -> int:
    metrics = check.DEFAULT if args.metrics is None else tuple(
        m.strip() for m in args.metrics.split(",") if m.strip())
    photos = None
    if args.images:
        photos = {str(p): read_image(p).convert("RGB")
                  for a in args.images for p in iq.images_in(a)}
    up = None if args.upscaler == "none" else load_upscaler(args.upscaler, device=args.device)
    table = check.sanity_check(metrics, photos=photos, upscaler=up, crop=args.crop or 224,
                               device=args.device)
    print(check.reading(table))
    failed = table[(table["damage"] == "all") & ~table["passed"]]["metric"].tolist()
    print(f"\nVerdicts kept in {check.check_path()}: tables flag "
          + (", ".join(failed) if failed else "no metric") + ".")
    if args.csv:
        atomic_write(args.csv, lambda tmp: table.to_csv(tmp, index=False))
    return 0


def info(args) -> int:
    print(describe_record(args.image))
    return 0


def describe_record(path) -> str:
    """A saved image's recipe as text (``pegu info``)."""
    rec = read_record(path)
    lines = [f"{path}"]
    if rec["parameters"]:
        lines += ["", "parameters (AUTOMATIC1111):", rec["parameters"]]
    if rec["pegu"]:
        p = rec["pegu"]
        lines += ["", "pegu settings:", json.dumps(p["settings"], indent=2, ensure_ascii=False)]
        for s in p.get("stages", []):
            lines.append(f"  {s['stage']:24} {s['seconds']:8.2f} s  "
                         f"{s['peak_bytes'] / 2**20:8.0f} MiB {s.get('memory', '')}")
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in p.get("versions", {}).items()))
    if not rec["parameters"] and not rec["pegu"]:
        lines.append("no generation settings in this image")
    return "\n".join(lines)
