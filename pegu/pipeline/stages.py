"""run(): text -> image at the target size, stage by stage, with what each stage cost;
run_many(): several, overlapping the upscale of one with the generation of the next on two
GPUs."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from ..core.device import describe, dtype_name, gpu_count
from ..core.errors import BadInput
from ..core.settings import RunSettings
from ..generate.faces import refine_faces
from .models import Models, Ready
from .plan import precheck, refine_size, resolve_upscaler
from .result import Choices, RunResult, StageCost, measure_stage


def run(settings: RunSettings, generator=None, upscaler=None, *, device="auto",
        offline: bool | None = None, progress: bool = True) -> RunResult:
    """Run the pipeline. Pass loaded ``generator`` / ``upscaler`` to reuse them across runs
    (they must be the models ``settings`` names); otherwise they are loaded here (on
    ``device``; ``offline``: never use the network), and loading is a stage of the result.

    Stages: (1) generate at the base size (or, mode "direct", at the target); (2) with
    refine, upscale to the intermediate size and (3) img2img there; (4) upscale to the exact
    target. A CUDA out-of-memory error in direct mode is a result (status "oom"), not a crash.
    """
    _check_given(settings, generator, upscaler)
    ready = Models(device, offline=offline, generator=generator, upscaler=upscaler).ready(
        settings)
    if upscaler is not None and ready.upscaler not in (None, upscaler):
        raise BadInput(f"the upscaler passed is {upscaler!r}, but the settings ask for "
                       f"{ready.settings.upscale}; pass a matching one, or none to load it")
    return run_ready(ready, progress)


def run_ready(ready: Ready, progress: bool = True) -> RunResult:
    """Run the stages of a run whose models are loaded (pegu.pipeline.Models.ready)."""
    result = _generate(ready.settings, ready.generator, progress)
    result.stages[:0] = ready.loading
    result.choices.upscaler_choice = ready.why
    settings = result.settings
    if result.image is not None and settings.faces is not None and result.status == "ok":
        result.image = _faces(result, ready.generator, result.image, progress)  # at target
    if result.image is not None or result.status != "ok":
        return result
    return _upscale(result, ready.generator, ready.upscaler, progress)


def _check_given(settings: RunSettings, generator, upscaler, who: str = "") -> None:
    """What a result records must be what ran: refuse, before any work, a generator or an
    upscaler passed in that is not what the settings name."""
    if generator is not None and settings.model not in (generator.name, generator.source):
        raise BadInput(f"{who}the generator passed is {generator.name!r} but the settings name "
                       f"{settings.model!r}")
    if upscaler is None or settings.mode == "direct":
        return
    wanted = resolve_upscaler(settings, generator)[0] if generator is not None else settings
    if wanted.upscale.model != "auto" and not upscaler.matches(wanted.upscale):
        raise BadInput(f"{who}the upscaler passed is {upscaler!r}, but the settings ask for "
                       f"{wanted.upscale}; pass a matching one, or none to load it")


def run_many(settings: list[RunSettings], generator=None, upscaler=None, *, device="auto",
             overlap: bool | str = "auto", offline: bool | None = None,
             progress: bool = False) -> list[RunResult]:
    """Run several settings of one model (and one upscaler) in order; returns their results
    in the same order.

    overlap: "auto" = on a machine with two or more GPUs, load the generator on the first
    and the upscaler on the second, and upscale image i on the second while image i+1
    generates on the first (two T4s: up to 2× the images per hour when the stages take
    equally long); True overlaps on whatever devices the models are on; False runs one
    after another. Runs with refine (which needs the generator again) or in direct mode
    are not overlapped.
    """
    settings = list(settings)
    if not settings:
        return []
    for s in settings:  # before any model loads
        precheck(s, offline)
        _check_given(s, generator, upscaler, "run_many runs one upscaler and one model: ")
    if overlap == "auto":
        overlap = device == "auto" and gpu_count() > 1
    two = overlap and device == "auto"
    models = Models("cuda:0" if two else device, offline=offline,
                    upscaler_device="cuda:1" if two else None, generator=generator,
                    upscaler=upscaler)
    first = models.ready(settings[0])
    resolved = [first.settings] + [resolve_upscaler(s, first.generator, offline)[0]
                                   for s in settings[1:]]
    for s in resolved:
        if s.model not in (first.generator.name, first.generator.source):
            raise BadInput(f"run_many runs one model; {s.model!r} differs from "
                           f"{first.generator.name!r}")
        if s.mode == "upscale" and first.upscaler is not None \
                and not first.upscaler.matches(s.upscale):
            raise BadInput(f"run_many runs one upscaler; {s.upscale.model!r} (tile "
                           f"{s.upscale.tile}) differs from the loaded "
                           f"{first.upscaler.name!r} (tile {first.upscaler.tile})")
    readies = [first] + [models.ready(s) for s in settings[1:]]  # loaded: nothing loads
    if not overlap:
        return [run_ready(r, progress) for r in readies]
    out: list = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pegu-upscale") as pool:
        pending = None
        for r in readies:
            if r.settings.mode != "upscale" or r.settings.refine is not None:
                if pending is not None:
                    pending.result()  # the upscaler is free again
                out.append(run_ready(r, progress))
                continue
            started = _generate(r.settings, r.generator, progress)
            started.stages[:0] = r.loading
            started.choices.upscaler_choice = r.why
            if pending is not None:
                pending.result()  # at most one image waits for the upscaler
            pending = pool.submit(_upscale, started, r.generator, r.upscaler, progress)
            out.append(pending)
    return [r.result() if isinstance(r, Future) else r for r in out]


def _generate(settings: RunSettings, generator, progress: bool) -> RunResult:
    """Stage 1: the base image (the final one in direct mode), or an "oom" result."""
    import torch

    dev = generator.device
    g = generator.resolve(settings.generate)
    if settings.mode == "direct":
        g = replace(g, width=settings.target[0], height=settings.target[1])
    settings = replace(settings, generate=g, model=generator.name)
    result = RunResult(settings=settings, choices=Choices(
        device=describe(dev), dtype=dtype_name(generator.dtype),
        generator_source=generator.source))
    try:
        gen = measure_stage(result.stages, "generate", dev,
                            lambda: generator.generate(g, progress=progress))
    except torch.OutOfMemoryError as e:
        if settings.mode != "direct":
            raise
        peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
        result.stages.append(StageCost("generate", 0.0, peak, "vram"))
        result.status, result.error = "oom", f"out of memory generating {g.width}x{g.height}: {e}"
        result.choices.memory = generator.memory_for(g.width, g.height)
        return result
    result.base = gen.image
    c = result.choices
    c.memory, c.vae_fp32_fallback, c.warnings = gen.memory, gen.vae_fp32_fallback, list(gen.warnings)
    c.embeddings, c.loras = dict(gen.embeddings), dict(gen.loras)
    if settings.mode == "direct":
        result.image = gen.image
    return result


def _upscale(result: RunResult, generator, upscaler, progress: bool) -> RunResult:
    """Stages 2-4 on a generated ``result``: refine (optional) and upscale to the target."""
    settings = result.settings
    # what ran is what is recorded: the registry name of an alias, the dtype resolved
    named = settings.upscale.model if Path(settings.upscale.model).suffix else upscaler.name
    settings = result.settings = replace(settings, upscale=replace(
        settings.upscale, model=named, dtype=upscaler.dtype_name))
    result.choices.upscaler_source = upscaler.source
    if upscaler.device != generator.device:
        result.choices.upscaler_device = describe(upscaler.device)
    image = result.base
    if settings.refine_tiled:  # upscale to the target, then tiled img2img there
        return _tiled_refine(result, generator, upscaler, image, progress)
    g = settings.generate
    # 2-3. refine: ESRGAN to the intermediate size, then img2img there
    if settings.refine is not None:
        size = refine_size(image.size, settings)
        result.choices.refine_size = f"{size[0]}x{size[1]}"
        image = _upscaled(result, upscaler, image, size, "upscale to refine size", progress)
        refined = measure_stage(result.stages, "refine", generator.device, lambda: (
            generator.refine(image, g, settings.refine, settings.refine_steps,
                             progress=progress, control=settings.refine_control,
                             controlnet=settings.controlnet)))
        image = result.intermediate = refined.image
        _record_refine(result, refined)
    # face detail where a face is still small (before the final upscale)
    if settings.faces is not None and settings.faces.at == "base":
        image = _faces(result, generator, image, progress)
    # 4. upscale to the exact target
    result.image = _upscaled(result, upscaler, image, settings.target, "upscale", progress)
    if settings.faces is not None and settings.faces.at == "target":
        result.image = _faces(result, generator, result.image, progress)
    return result


def _upscaled(result: RunResult, upscaler, image, size, stage: str, progress: bool):
    """The upscaler stage named ``stage`` to ``size``, its tiles and fallbacks recorded."""
    up = measure_stage(result.stages, stage, upscaler.device, lambda: upscaler.run(
        image, target=size, fit=result.settings.fit, progress=progress))
    c = result.choices
    c.tile, c.tiles, c.upscale_passes = max(c.tile or 0, up.tile), up.tiles, up.passes
    if up.fallback:
        c.fallbacks.append(f"{stage}: {up.fallback}")
    return up.image


def _tiled_refine(result: RunResult, generator, upscaler, image, progress: bool):
    """Stages with ``refine_tiled``: faces (at the base), ESRGAN to the target, then
    img2img at the target on native-size latent tiles (MultiDiffusion)."""
    settings = result.settings
    if settings.faces is not None and settings.faces.at == "base":
        image = _faces(result, generator, image, progress)
    up = _upscaled(result, upscaler, image, settings.target, "upscale", progress)
    result.choices.refine_size = f"{up.width}x{up.height}"
    result.intermediate = up
    refined = measure_stage(
        result.stages, "refine (tiled)", generator.device, lambda: generator.refine(
            up, settings.generate, settings.refine, settings.refine_steps,
            progress=progress, tiled=True, control=settings.refine_control,
            controlnet=settings.controlnet))
    _record_refine(result, refined)
    result.image = refined.image
    if settings.faces is not None and settings.faces.at == "target":
        result.image = _faces(result, generator, result.image, progress)
    return result


def _record_refine(result: RunResult, refined) -> None:
    """What the refine used: the fp32 VAE fallback, the ControlNet (what a re-run loads)
    and where it came from."""
    result.choices.vae_fp32_fallback |= refined.vae_fp32_fallback
    if refined.controlnet is not None:
        result.choices.controlnet_source = refined.controlnet_source
        result.settings = replace(result.settings, controlnet=refined.controlnet)


def _faces(result: RunResult, generator, image, progress: bool):
    """The face stage on ``image``; the squares it refined go to ``result.choices.faces``."""
    settings = result.settings
    image, found = measure_stage(result.stages, "faces", generator.device, lambda: refine_faces(
        image, generator, settings.generate, settings.faces, progress=progress))
    result.choices.faces = [list(f.crop) for f in found]
    return image
