"""The efficiency frontier's cost on one GPU: prompt -> 2048² for each variant (the model's
standard steps, each few-step distillation, DeepCache, ToMe, a compiled UNet) by each way to
the target (upscale, tiled refine, direct); prints a table (not a test). Run it through
``benchmarks/gpu.sh`` (after the pipeline tables), or alone:

    python benchmarks/frontier.py            # full size on a CUDA GPU
    python benchmarks/frontier.py --smoke    # pegu's tiny models on the CPU (the tests)

Full size: SD 1.5's and SDXL's real architectures with random weights (benchmarks/pipeline.py
builds them), each distillation a random rank-64 LoRA on the attention projections (the
published LCM-LoRA for SD 1.5 is rank 64) loaded as pegu loads the real one: a step costs the
same whatever the weights, so seconds, memory and UNet calls are the real ones. Quality needs
the real weights: notebook 01's frontier measures it (docs/efficiency.md). --smoke: the tiny
models with their tiny LoRAs, through exactly pegu's path.

Columns: seconds (warm: each row runs once untimed first), "x standard" (the same way's
standard-steps seconds over the row's: the speed-up), peak GiB (allocated VRAM; RSS on the
CPU), UNet calls (one a step: the pipeline's), deep part runs (the UNet's mid block: once
per call and tile, fewer with DeepCache).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def variants(family: str, smoke: bool) -> list[tuple[str, dict, tuple[str, ...]]]:
    """(name, generate settings, ways) of each row for ``family``."""
    from pegu.core.registry import DISTILLATIONS

    # direct generation of 2048² is SDXL's baseline (SD 1.5 at 4x its size repeats subjects)
    all_ways = ("upscale", "tiled refine") + (("direct",) if family == "sdxl" else ())
    rows = [("standard", {}, all_ways)]
    for d in DISTILLATIONS.values():
        if family in d.families and (not smoke or d.name in ("lcm", "lightning-4")):
            rows.append((d.name, {"distill": d.name},
                         all_ways if d.name in ("lcm", "lightning-4") else ("upscale",)))
    rows += [("standard + DeepCache 3", {"deepcache": 3}, ("upscale", "tiled refine")),
             ("standard + ToMe 0.5", {"tome": 0.5}, ("upscale", "tiled refine")),
             ("lcm + DeepCache 2", {"distill": "lcm", "deepcache": 2}, ("upscale",))]
    if not smoke:  # inductor on the CPU takes minutes to compile: GPU rows only
        rows.append(("standard + compiled UNet", {"compile": "max-autotune-no-cudagraphs"},
                     ("upscale",)))
    return rows


def generator(family: str, dev, dtype, smoke: bool):
    """pegu's Generator: the tiny model (smoke), else the real architecture with random
    weights and, per distillation, a random rank-64 LoRA loaded as pegu loads the real one."""
    import torch

    from pegu.core.registry import DISTILLATIONS, GENERATORS
    from pegu.generate import Generator, distill as dist, load_generator

    if smoke:
        return load_generator(f"tiny-{family}", device=dev)
    import pipeline as bench  # benchmarks/pipeline.py

    pipe = bench.build(family, dev, dtype, smoke=False)
    spec = GENERATORS["sdxl-base" if family == "sdxl" else "realistic-vision-v6"]
    g = Generator(pipe, name=f"{family}-random", family=family, native=spec.native, spec=None,
                  device=dev, dtype=dtype, memory="auto", scheduler=spec.scheduler,
                  source="random weights", offline=True)
    state = {k: v.to(dtype) for k, v in dist.tiny_lora(pipe.unet, "peft", 0, rank=64).items()}
    for d in DISTILLATIONS.values():
        if family in d.families:
            pipe.load_lora_weights(dict(state), adapter_name=dist.adapter_name(d))
            g.distill_sources[d.name] = "random rank-64 LoRA"
    torch.cuda.empty_cache()
    return g


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny models on the CPU")
    ap.add_argument("--steps", type=int, default=None,
                    help="the standard rows' steps (default 25; smoke 8)")
    ap.add_argument("--families", default="sd15,sdxl", help="sd15, sdxl or both")
    args, _ = ap.parse_known_args(argv)  # gpu.sh passes its own flags on
    import pandas as pd
    import torch
    from diffusers.utils import logging as diffusers_logging

    import pegu
    from pegu.core.device import Measure, describe
    from pegu.core.settings import GenerateSettings, RunSettings, UpscaleSettings

    warnings.filterwarnings("ignore", category=UserWarning, module="pegu")  # the cards' notes
    diffusers_logging.set_verbosity_error()
    cuda = torch.cuda.is_available() and not args.smoke
    if not cuda and not args.smoke:
        sys.exit("benchmarks/frontier.py needs a CUDA GPU; on the CPU run it with --smoke")
    dev = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    steps = args.steps or (8 if args.smoke else 25)
    target = 256 if args.smoke else 2048
    tmp = Path(tempfile.mkdtemp(prefix="pegu-frontier-"))
    print(f"\nEfficiency frontier: prompt -> {target}², standard = the model's sampler at "
          f"{steps} steps; {describe(dev)}", flush=True)

    def upscaler(scale: int):
        if args.smoke:
            return pegu.load_upscaler("realesr-animevideov3", device=dev)
        import pipeline as bench

        path = tmp / f"x{scale}plus-random.pth"
        torch.manual_seed(0)
        torch.save({"params_ema": bench.rrdb_net(scale).state_dict()}, path)
        return pegu.load_upscaler(path, device=dev)

    rows = []
    t0 = time.perf_counter()
    for family in args.families.split(","):
        g = generator(family, dev, dtype, args.smoke)
        base = 64 if args.smoke else g.native
        up = upscaler(2 if target // base == 2 else 4)
        calls, deep = [], []  # the pipeline's UNet calls; the deep part's runs (per tile)
        hooks = [g.pipe.unet.register_forward_pre_hook(lambda m, a: calls.append(1)),
                 g.pipe.unet.mid_block.resnets[0].register_forward_pre_hook(
                     lambda m, a: deep.append(1))]
        standard = {}
        for name, extra, ways in variants(family, args.smoke):
            for way in ways:
                gs = GenerateSettings("RAW photo, portrait of a woman", seed=0,
                                      width=base, height=base,
                                      steps=None if "distill" in extra else steps, **extra)
                kw = {"direct": dict(mode="direct"),
                      "tiled refine": dict(refine=0.3, refine_tiled=True)}.get(way, {})
                s = RunSettings(gs, model=g.name, target=(target, target),
                                upscale=UpscaleSettings(up.name), **kw)
                try:
                    pegu.run(s, g, up, progress=False)  # warm-up
                    calls.clear()
                    deep.clear()
                    with Measure(dev) as m:
                        r = pegu.run(s, g, up, progress=False)
                except Exception as e:  # one row failing must not lose the table
                    print(f"  {family} {name} {way}: {type(e).__name__}: {e}", flush=True)
                    continue
                if name == "standard":
                    standard[way] = m.seconds
                rows.append({"model": family, "variant": name, "way": way,
                             "steps": r.settings.generate.steps,
                             "seconds": round(m.seconds, 2),
                             "x standard": round(standard.get(way, float("nan")) / m.seconds, 2),
                             "peak GiB": round(m.peak_bytes / 2**30, 2),
                             "UNet calls": len(calls), "deep part runs": len(deep)})
                print(f"[{time.perf_counter() - t0:6.1f} s] {family} {name} {way}: "
                      f"{m.seconds:.2f} s", flush=True)
        for h in hooks:
            h.remove()
        del g, up
        if cuda:
            torch.cuda.empty_cache()
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
