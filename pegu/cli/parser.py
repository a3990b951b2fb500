"""The ``pegu`` command's arguments. Every default is the library's own (pegu.core.settings,
the registry, the loaders), read from there."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__
from ..core.registry import DEFAULT_GENERATOR, DEFAULT_UPSCALER, DISTILLATIONS
from ..core.settings import (COMPILE_MODES, ENGINES, FITS, MAX_SIDE, PROMPT_SYNTAXES, SCHEDULES,
                             TARGET, TILE_OVERLAP, UPSCALER_DTYPES, FaceSettings,
                             UpscaleSettings)
from ..lab.iqa import PANEL
from ..lab.metrics import DEFAULT_CLIP
from .demo import DEMO_MODEL, DEMO_OUT, DEMO_PHOTO_SIZE
from .kaggle import DATASET
from .kernels import ACCELERATORS, DEFAULT_ACCELERATOR


def size(text: str) -> tuple[int, int]:
    """'2048x2048' or '2048' -> (2048, 2048)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        w, h = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        w = h = 0
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 2048x2048, got {text!r}")
    if max(w, h) > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{text}: each side must be at most {MAX_SIDE} pixels")
    return w, h


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pegu", description=(
        "Performance-Efficient Generative Upscaling: generate at a model's native size, "
        "upscale with Real-ESRGAN, measure what it costs."))
    p.add_argument("--version", action="version", version=f"pegu {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_upscale, _models, _demo, _generate, _sweep, _iqa, _doctor, _kaggle, _info):
        add(sub)
    return p


def _offline(p) -> None:
    p.add_argument("--offline", action=argparse.BooleanOptionalAction, default=None,
                   help="never download (--no-offline: allow it even where PEGU_OFFLINE=1 "
                   "is set; default: PEGU_OFFLINE / HF_HUB_OFFLINE decide)")


def _upscale(sub) -> None:
    u = sub.add_parser("upscale", help="upscale images with a Real-ESRGAN model",
                       description="Upscale images; writes <stem>_<model>_<size>.png files.")
    u.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    u.add_argument("--model", default=UpscaleSettings.model,
                   help="registry name (see `pegu models`), a .pth/.safetensors file, or "
                   "auto (default): RealESRGAN_x2plus when the output is at most twice the "
                   f"input, else {DEFAULT_UPSCALER}")
    how = u.add_mutually_exclusive_group()
    how.add_argument("--scale", type=float, help="output = input x SCALE (default: the model's)")
    how.add_argument("--target", type=size, metavar="WxH", help="exact output size")
    u.add_argument("--fit", choices=FITS,
                   help="for a target of another aspect ratio: crop (cover) or pad (contain)")
    u.add_argument("--tile", type=int, default=None,
                   help="tile edge in input px (0 = untiled; default 512 on CUDA, 256 on CPU)")
    u.add_argument("--tile-overlap", type=int, default=TILE_OVERLAP,
                   help=f"px shared by neighbouring tiles (default {TILE_OVERLAP})")
    u.add_argument("--denoise", type=float, help="realesr-general-x4v3 only: 0..1")
    u.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    u.add_argument("--dtype", default="auto", choices=UPSCALER_DTYPES,
                   help="auto (fp16 on CUDA, fp32 on the CPU), fp32, fp16 (CUDA), bf16")
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
    _offline(u)


def _models(sub) -> None:
    sub.add_parser("models", help="list the models pegu knows, and where each would come from")


def _demo(sub) -> None:
    d = sub.add_parser("demo", help="pegu's main job on this machine, offline",
                       description="Generate with a text-to-image model (default tiny-sd15, a "
                       "smoke-test model) and upscale with real Real-ESRGAN weights to the "
                       "target; then a real photograph upscaled 4x beside bicubic and Lanczos. "
                       "Saves PNGs and a figure; prints times and peak memory.")
    d.add_argument("--model", default=DEMO_MODEL, help="text-to-image model (pegu models)")
    d.add_argument("--target", type=size, default=TARGET, metavar="WxH")
    d.add_argument("--upscaler", default=DEFAULT_UPSCALER)
    d.add_argument("--photo-size", type=int, default=DEMO_PHOTO_SIZE,
                   help=f"photo crop edge in px, ≤ 512 (default {DEMO_PHOTO_SIZE})")
    d.add_argument("--device", default="auto")
    d.add_argument("--out", type=Path, default=DEMO_OUT)
    d.add_argument("--online", action="store_true",
                   help="allow downloads (default: offline copies and cached models only)")


def _generate(sub) -> None:
    g = sub.add_parser("generate", help="text -> image at the target size (saved with its recipe)",
                       description="Generate at the model's native size, upscale to --target "
                       "(or --direct: generate at the target), save a PNG whose metadata "
                       "AUTOMATIC1111, Civitai and `pegu generate --from` read.")
    g.add_argument("prompt", nargs="?", help="the prompt (or --prompt-file, or --from)")
    g.add_argument("--prompt-file", type=Path, help="read the prompt from this text file")
    g.add_argument("--from", dest="from_image", type=Path, metavar="IMAGE",
                   help="re-run the settings saved in IMAGE (flags given here override them)")
    g.add_argument("--model", help=f"text-to-image model (default {DEFAULT_GENERATOR})")
    g.add_argument("--negative", help="negative prompt (default: the model's recommendation)")
    g.add_argument("--prompt-syntax", choices=PROMPT_SYNTAXES,
                   help="a1111 (default): (word:1.2), [word], BREAK, any length; plain: the "
                   "text as it is, cut at 77 tokens")
    g.add_argument("--seed", type=int)
    g.add_argument("--count", type=int, default=1,
                   help="N images, seeds SEED..SEED+N-1 (on two GPUs the upscaler works on "
                   "one while the next image generates on the other)")
    g.add_argument("--steps", type=int)
    g.add_argument("--guidance", type=float)
    g.add_argument("--scheduler", help="e.g. 'DPM++ 2M Karras', 'Euler a', 'UniPC'")
    g.add_argument("--schedule", help="A1111's schedule type: " + ", ".join(SCHEDULES))
    g.add_argument("--distill", metavar="NAME",
                   help="few-step distillation LoRA: " + ", ".join(DISTILLATIONS) + " (its "
                   "card's sampler, steps and guidance become the defaults; docs/efficiency.md)")
    g.add_argument("--deepcache", type=int, metavar="N",
                   help="DeepCache: the UNet's deep features every N-th step only (e.g. 3)")
    g.add_argument("--deepcache-branch", type=int, metavar="B",
                   help="the down block DeepCache's partial steps still run (default 0)")
    g.add_argument("--tome", type=float, metavar="RATIO",
                   help="token merging at the highest-resolution attention (e.g. 0.5)")
    g.add_argument("--compile-unet", nargs="?", const="default", choices=COMPILE_MODES,
                   metavar="MODE", help="torch.compile the UNet (reduce-overhead: CUDA graphs; "
                   "GPUs of compute capability 7.0 or newer); pays off over many images")
    g.add_argument("--size", type=size, metavar="WxH", help="base size (default: native)")
    g.add_argument("--target", type=size, metavar="WxH",
                   help="final size (default {}x{})".format(*TARGET))
    g.add_argument("--fit", choices=FITS)
    g.add_argument("--upscaler", help="upscaler name or weights (default auto: "
                   "RealESRGAN_x2plus when the target is at most twice the base, else x4plus)")
    g.add_argument("--tile", type=int, help="upscaler tile edge in px (0 = untiled)")
    g.add_argument("--upscaler-dtype", choices=UPSCALER_DTYPES,
                   help="upscaler precision (bf16: the fast CPU path; auto: what the device "
                   "suits, e.g. to re-run on a CPU an image made with fp16 on a GPU)")
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
    faces = FaceSettings()
    g.add_argument("--faces", type=float, nargs="?", const=faces.strength, metavar="STRENGTH",
                   help="face detail: detect faces, img2img each at the model's native size "
                   f"at this strength (default {faces.strength}), paste back seamlessly")
    g.add_argument("--face-prompt", help="prompt for the face crops (default: the prompt)")
    g.add_argument("--face-padding", type=float, help="context around each face, share of "
                   f"its box (default {faces.padding})")
    g.add_argument("--max-faces", type=int,
                   help=f"refine at most this many (default {faces.max_faces})")
    g.add_argument("--faces-at", choices=("base", "target"),
                   help=f"before the final upscale (base) or on the final image (default "
                   f"{faces.at})")
    g.add_argument("--face-restore", metavar="NAME|PATH",
                   help="then restore each face: GFPGANv1.4, CodeFormer or a weights file")
    g.add_argument("--face-fidelity", type=float,
                   help=f"CodeFormer's weight w, 0..1 (1 keeps the face; default "
                   f"{faces.fidelity})")
    g.add_argument("--direct", action="store_true",
                   help="generate at the target size directly (the baseline)")
    g.add_argument("--device", default="auto")
    g.add_argument("--out", type=Path, help="PNG file or folder (default: out/)")
    g.add_argument("--overwrite", action="store_true")
    _offline(g)


def _sweep(sub) -> None:
    w = sub.add_parser("sweep", help="run a grid of settings into one results table",
                       description="Run every combination in a grid (YAML) in this process, "
                       "or with --notebook through papermill; one row per run in "
                       "OUT/results.csv and OUT/results.parquet. Re-running resumes.")
    w.add_argument("merge", nargs="*", metavar="merge DIR",
                   help="merge the sweep folders DIR... (shards, Kaggle kernels' outputs) into "
                   "--out: one table of their grid, the runs still missing listed")
    w.add_argument("--grid", type=Path, help="grid YAML (see docs/sweeps.md); with merge: "
                   "the grid the folders ran (default: the one they recorded)")
    w.add_argument("--out", type=Path, required=True, help="results folder")
    w.add_argument("--notebook", type=Path, help="execute this notebook per parameter set")
    w.add_argument("--processes", type=int, help="split across N processes (default: one per "
                   "GPU when there are several, else 1)")
    w.add_argument("--shard", help="I/N: run only this process's share (set by --processes "
                   "or accelerate launch)")
    w.add_argument("--cluster", metavar="ray|auto|ADDRESS", help="run on a Ray cluster: 'ray' "
                   "($RAY_ADDRESS, else a local one), 'auto', or an address such as "
                   "ray://head:10001 (pip install 'pegu[ray]'; docs/sweeps.md)")
    w.add_argument("--workers", type=int, help="with --cluster: how many workers, one GPU each "
                   "(default: every GPU of the cluster; one per CPU on a CPU cluster)")
    w.add_argument("--device", default="auto")
    w.add_argument("--clip", default=DEFAULT_CLIP,
                   help=f"CLIP model for clip_score/clip_realism (default {DEFAULT_CLIP})")
    w.add_argument("--no-clip", action="store_true", help="weight-free metrics only")
    w.add_argument("--many", action="store_true",
                   help="allow a grid of more than 10,000 runs (at most 1,000,000)")
    w.add_argument("--time-limit", type=float, metavar="HOURS",
                   help="start no run that would end after this many hours (default: on "
                   "Kaggle, before the 12-hour session ends; elsewhere none)")
    w.add_argument("--resume-from", metavar="DIR", help="an earlier run's folder (or "
                   "'attached': a Kaggle input) whose finished rows are kept")
    w.add_argument("--keep-failed", action="store_true",
                   help="on resume, keep failed rows instead of running them again")
    w.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no line per run and no progress bars")
    _offline(w)


def _iqa(sub) -> None:
    q = sub.add_parser("iqa", help="image-quality metrics: pyiqa's panel, preference scores, "
                       "FID/KID/CMMD, and their sanity check",
                       description="Score images with pyiqa's no-reference metrics and pegu's "
                       "judges (hpsv2.1, imagereward, pickscore, vqa: against each image's prompt); with "
                       "--real, FID and KID (and --cmmd) against real photographs; with "
                       "--check, how often each metric ranks real photographs of people above "
                       "damaged copies (the iqa extra: pip install 'pegu[iqa]').")
    q.add_argument("images", nargs="*", type=Path, metavar="IMAGE_OR_FOLDER",
                   help="images to score (with --check: the photographs to damage; default "
                   "the real photographs of people that ship offline)")
    q.add_argument("--metrics", default=None,
                   help=f"comma-separated metrics: pyiqa's no-reference ones and pegu's "
                   f"judges hpsv2.1, imagereward, pickscore, vqa (default: pegu's panel, {','.join(PANEL)}; "
                   "'none' for FID/KID only; with --check also sharpness, noise, clip_realism; "
                   "default there: sharpness,noise,piqe,entropy)")
    q.add_argument("--prompt", help="the prompt the judges score against (default: each "
                   "image's own, from its pegu recipe)")
    q.add_argument("--real", type=Path, help="folder of real photographs: adds FID and KID")
    q.add_argument("--crop", type=int, help="with --real: also on CROPxCROP crops at native "
                   "resolution; with --check: the crop size (default 224)")
    q.add_argument("--cmmd", nargs="?", const="default", metavar="CLIP",
                   help="with --real: also CMMD (CLIP ViT-L/14-336 embeddings; 'tiny' for a "
                   "stand-in)")
    q.add_argument("--check", action="store_true",
                   help="the sanity check: share of real-vs-damaged pairs each metric orders "
                   "right; metrics below 80%% are flagged in every table")
    q.add_argument("--upscaler", default="RealESRGAN_x4plus",
                   help="with --check: the x4 upscaler whose output is one damage ('none': "
                   "leave it out)")
    q.add_argument("--inception", type=Path, help="FID's Inception weights file (default: "
                   "pegu's cache, downloaded there when online)")
    q.add_argument("--device", default="auto")
    q.add_argument("--csv", type=Path, help="also write the per-image scores (or the check's "
                   "table) here")


def _doctor(sub) -> None:
    sub.add_parser("doctor", help="what this machine can run, each problem with its fix")


def _kaggle(sub) -> None:
    k = sub.add_parser("kaggle", help="push the notebooks as Kaggle kernels; build the wheels")
    ksub = k.add_subparsers(dest="kaggle_command", required=True)
    kp = ksub.add_parser("push", help="stage notebooks with their metadata and push them")
    kp.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                    help="e.g. 02_upscaling_walkthrough (default: all)")
    kp.add_argument("--accelerator", default=DEFAULT_ACCELERATOR, metavar="|".join(ACCELERATORS),
                    help="NvidiaTeslaT4 = GPU T4 x2 (default; a single T4 is no longer "
                    "offered); a P100 request runs on T4 x2")
    kp.add_argument("--internet", action=argparse.BooleanOptionalAction, default=True,
                    help="kernel internet on (default) or off (--no-internet)")
    kp.add_argument("--dry-run", action="store_true", help="show, do not push")
    kp.add_argument("--username", help="Kaggle username (default: credentials)")
    kp.add_argument("--staging", type=Path, help="stage into this folder (default: a "
                    "temporary one)")
    kp.add_argument("--models", nargs="+", default=[], metavar="NAME[=SOURCE]",
                    help="the models the notebook runs (its models/model parameter), each "
                    "with the Kaggle input holding its weights: <owner>/<dataset> or "
                    "<owner>/<model>/<framework>/<variation>[/<version>]")
    kp.add_argument("--shards", type=int, metavar="N", help="push N kernels of each notebook, "
                    "kernel i running share i of its sweeps (merge them: pegu sweep merge)")
    kp.add_argument("--resume", action="store_true", help="each kernel attaches its own "
                    "earlier version's output and continues its sweeps from it")
    kp.add_argument("--attach", nargs="+", default=[], metavar="SOURCE",
                    help="more Kaggle inputs to attach (VAEs, CLIP, a ControlNet; "
                    "kernel:<owner>/<notebook> for a kernel's output)")
    for action, what in (("status", "whether a pushed kernel is queued, running, complete "
                                    "or failed"),
                         ("output", "fetch what a complete kernel wrote")):
        ka = ksub.add_parser(action, help=what)
        ka.add_argument("notebook", metavar="NOTEBOOK", help="e.g. 01_model_comparison")
        ka.add_argument("--username", help="Kaggle username (default: credentials)")
        if action == "output":
            ka.add_argument("--out", type=Path, help="where to put it (default: "
                            "results/kaggle/NOTEBOOK)")
    kk = ksub.add_parser("package", help=f"build the {DATASET} dataset for offline kernels")
    kk.add_argument("--out", type=Path, default=Path(f"out/{DATASET}"),
                    help="an empty or new folder (or an earlier build, replaced whole): the "
                    f"dataset uploads everything in it (default out/{DATASET})")
    kk.add_argument("--username", help="Kaggle username, the dataset's owner (default: "
                    "KAGGLE_USERNAME, else ~/.kaggle/kaggle.json)")
    kk.add_argument("--no-extras", action="store_true", help="pegu's wheel only")


def _info(sub) -> None:
    i = sub.add_parser("info", help="print the recipe saved in an image")
    i.add_argument("image", type=Path)
