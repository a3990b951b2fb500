"""run(): text -> image at the target size, stage by stage, with what each stage cost."""
from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path

from .settings import RunSettings


@dataclass(frozen=True)
class StageCost:
    """One stage: wall time in seconds, peak memory in bytes (VRAM on CUDA, RSS on CPU)."""

    stage: str
    seconds: float
    peak_bytes: int
    memory: str


@dataclass
class RunResult:
    """What a run made and what it took.

    image: the final image (None when status is "oom"). base / intermediate: the generated
    image and, with refine, the refined one at the intermediate size. settings: the settings
    with every default resolved (what ``save`` stores). stages: one StageCost per stage.
    choices: what was actually used (device, dtype, memory level, tile, fallbacks, sources).
    status: "ok" or "oom" (direct mode ran out of GPU memory; ``error`` says where).
    repeat_seconds: with :func:`timed_run`, every repeat's total seconds (this result is
    the median one). warmed_up: whether first-call costs were kept out (an untimed warm-up
    of this shape ran before, :func:`warm_up`).
    """

    settings: RunSettings
    image: object = None
    base: object = None
    intermediate: object = None
    stages: list[StageCost] = field(default_factory=list)
    choices: dict = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    repeat_seconds: list[float] = field(default_factory=list)
    warmed_up: bool = False

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)

    @property
    def peak_bytes(self) -> int:
        return max((s.peak_bytes for s in self.stages), default=0)

    def summary(self) -> str:
        """One line: size, total time, peak memory and what ran."""
        size = "no image" if self.image is None else "{}x{}".format(*self.image.size)
        s = self.settings
        what = s.model if s.mode == "direct" else f"{s.model} + {s.upscale.model}"
        memory = self.stages[-1].memory if self.stages else ""
        return (f"{self.status}: {size} in {self.seconds:.1f} s, peak "
                f"{self.peak_bytes / 2**20:.0f} MiB {memory} ({s.mode}: {what}, "
                f"{self.choices.get('device', '?')})")

    def record(self) -> dict:
        """Timings, choices and versions: the ``pegu`` PNG chunk beside the settings."""
        timing = {"warmed_up": self.warmed_up, "repeat_seconds": self.repeat_seconds}
        return {"stages": [vars(s) for s in self.stages], "choices": self.choices,
                "timing": timing, "status": self.status, "versions": _versions()}

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the final image as PNG with its recipe (A1111 ``parameters`` and ``pegu``
        JSON), atomically. Refuses to replace an existing file unless ``overwrite``."""
        from .images import write_png
        from .metadata import a1111_parameters, pnginfo

        if self.image is None:
            raise ValueError(f"nothing to save: the run ended with status {self.status!r}")
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"pegu saves PNG (lossless, with metadata); got {path.name}")
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to "
                                  "replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        extra = {"refine_size": self.choices.get("refine_size", "")}
        if self.choices.get("embeddings"):  # as A1111 writes them
            extra["a1111"] = {"TI hashes": ", ".join(
                f"{n}: {h}" for n, h in self.choices["embeddings"].items())}
        info = pnginfo(self.settings, self.record(), a1111_parameters(self.settings, extra))
        return write_png(self.image, path, pnginfo=info)


def measure_stage(stages: list[StageCost], name: str, device, fn):
    """Call ``fn()``, append its StageCost (wall time, peak memory) to ``stages``; return
    what ``fn`` returned."""
    from .device import Measure

    with Measure(device) as m:
        value = fn()
    stages.append(StageCost(name, round(m.seconds, 3), m.peak_bytes, m.memory_kind))
    return value


def stages_table(stages: list[StageCost]):
    """The stages as a pandas DataFrame: stage, seconds, peak_mib, memory."""
    import pandas as pd

    return pd.DataFrame([{"stage": s.stage, "seconds": round(s.seconds, 2),
                          "peak_mib": round(s.peak_bytes / 2**20), "memory": s.memory}
                         for s in stages])


def run(settings: RunSettings, generator=None, upscaler=None, *, device="auto",
        progress: bool = True) -> RunResult:
    """Run the pipeline. Pass loaded ``generator`` / ``upscaler`` to reuse them across runs
    (they must be the models ``settings`` names); otherwise they are loaded here.

    Stages: (1) generate at the base size (or, mode "direct", at the target); (2) with
    refine, upscale to the intermediate size and (3) img2img there; (4) upscale to the exact
    target. A CUDA out-of-memory error in direct mode is a result (status "oom"), not a crash.
    """
    from .device import resolve_device
    from .generate import load_generator

    _precheck(settings)
    if settings.upscale.model != "auto":
        _check_upscaler(settings, upscaler)  # before any work
    loading: list[StageCost] = []
    if generator is None:
        dev = resolve_device(device)
        generator = measure_stage(loading, "load generator", dev,
                                  lambda: load_generator(settings.model, device=dev))
    settings, why = resolve_upscaler(settings, generator)
    _check_upscaler(settings, upscaler)
    result = _generate(settings, generator, progress)
    result.stages[:0] = loading
    if why:
        result.choices["upscaler_choice"] = why
    if result.image is not None and settings.faces is not None and result.status == "ok":
        result.image = _faces(result, generator, result.image, progress)  # direct, at target
    if result.image is not None or result.status != "ok":
        return result
    return _upscale(result, generator, upscaler, progress)


def warm_up(settings: RunSettings, generator, upscaler=None) -> bool:
    """Run ``settings`` once, untimed and cut short (2 steps, 1 refine step), unless this
    generator and upscaler have already run its shape (mode, sizes, sampler, refine, tile):
    one-off first-call costs (CUDA context, cuDNN autotuning, lazy imports, allocator
    growth) then stay out of the measured runs. Returns whether it ran."""
    settings, _ = resolve_upscaler(settings, generator)
    g = generator.resolve(settings.generate)
    used = upscaler if settings.mode == "upscale" else None
    key = (settings.mode, g.width, g.height, g.scheduler, settings.target, settings.fit,
           settings.refine is not None, settings.refine_size, settings.refine_tiled,
           settings.refine_control is not None, settings.faces is not None)
    if key in generator.warmed and (used is None or key in used.warmed):
        return False
    quick = replace(settings, generate=replace(settings.generate, steps=min(g.steps, 2)),
                    refine_steps=None if settings.refine is None else 1)
    run(quick, generator, used, progress=False)
    generator.warmed.add(key)
    if used is not None:
        used.warmed.add(key)
    return True


MAX_REPEATS = 100  # timed runs per measurement


def check_repeats(repeats, name: str = "repeats") -> int:
    """``repeats`` if it is a whole number from 1 to MAX_REPEATS, else a ValueError."""
    if not isinstance(repeats, int) or isinstance(repeats, bool) or \
            not 1 <= repeats <= MAX_REPEATS:
        raise ValueError(f"{name} must be a whole number from 1 to {MAX_REPEATS}, "
                         f"got {repeats!r}")
    return repeats


def timed_run(settings: RunSettings, generator, upscaler=None, *, repeats: int = 1,
              warmup: bool = True, progress: bool = False) -> RunResult:
    """``run`` measured as a benchmark: :func:`warm_up` first (unless ``warmup`` is False),
    then ``repeats`` runs. Returns the run whose total time is the median (the lower one of
    the middle two for an even count), its image and stage costs, with every repeat's total
    in ``repeat_seconds``. Clocks are read after CUDA synchronizes (pegu.device.Measure)."""
    check_repeats(repeats)
    if warmup:
        warm_up(settings, generator, upscaler)
    results = [run(settings, generator, upscaler, progress=progress) for _ in range(repeats)]
    totals = [r.seconds for r in results]
    median = sorted(range(repeats), key=lambda i: totals[i])[(repeats - 1) // 2]
    result = results[median]
    result.repeat_seconds = [round(t, 3) for t in totals]
    result.warmed_up = warmup
    return result


def run_many(settings: list[RunSettings], generator=None, upscaler=None, *, device="auto",
             overlap: bool | str = "auto", progress: bool = False) -> list[RunResult]:
    """Run several settings of one model (and one upscaler) in order; returns their results
    in the same order.

    overlap: "auto" = on a machine with two or more GPUs, load the generator on the first
    and the upscaler on the second, and upscale image i on the second while image i+1
    generates on the first (two T4s: up to 2× the images per hour when the stages take
    equally long); True overlaps on whatever devices the models are on; False runs one
    after another. Runs with refine (which needs the generator again) or in direct mode
    are not overlapped.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    from .device import gpu_count
    from .generate import load_generator
    from .upscale import load_upscaler_from

    settings = list(settings)
    if not settings:
        return []
    for s in settings:
        _precheck(s)  # before any model loads
    if overlap == "auto":
        overlap = device == "auto" and gpu_count() > 1
    first = settings[0]
    if generator is None:
        generator = load_generator(first.model, device="cuda:0" if overlap and
                                   device == "auto" else device)
    settings = [resolve_upscaler(s, generator)[0] for s in settings]
    first = settings[0]
    if upscaler is None and any(s.mode == "upscale" for s in settings):
        upscaler = load_upscaler_from(first.upscale, device="cuda:1" if overlap and
                                      device == "auto" else generator.device)
    for s in settings:
        if s.mode == "upscale" and not upscaler.matches(s.upscale):
            raise ValueError(f"run_many runs one upscaler; {s.upscale.model!r} (tile "
                             f"{s.upscale.tile}) differs from the loaded {upscaler.name!r} "
                             f"(tile {upscaler.tile})")
    if not overlap:
        return [run(s, generator, upscaler, progress=progress) for s in settings]
    out: list = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pegu-upscale") as pool:
        pending = None
        for s in settings:
            if s.mode != "upscale" or s.refine is not None:
                if pending is not None:
                    pending.result()  # the upscaler is free again
                out.append(run(s, generator, upscaler, progress=progress))
                continue
            started = _generate(s, generator, progress)
            if pending is not None:
                pending.result()  # at most one image waits for the upscaler
            pending = pool.submit(_upscale, started, generator, upscaler, progress)
            out.append(pending)
    return [r.result() if isinstance(r, Future) else r for r in out]


def _precheck(settings: RunSettings) -> None:
    """What can be refused before any model loads: an unknown upscaler or face restorer or
    a missing weights file (a registry restorer not at hand offline too), a target whose
    output this machine's RAM cannot hold, and a base size whose aspect ratio differs from
    the target's without ``fit``."""
    from .registry import generator_spec, upscaler_spec
    from .upscale import _check_memory, plan_size

    if settings.faces is not None and settings.faces.restore:
        from .faces import check_restorer

        check_restorer(settings.faces.restore)
    if settings.refine_control is not None:
        _check_controlnet(settings)
    if settings.mode == "direct":
        return
    _check_memory(settings.target, "cuda")  # the least any device needs for the output
    name = settings.upscale.model
    if Path(name).suffix:
        if not Path(name).expanduser().is_file():
            raise FileNotFoundError(f"upscaler weights not found: {name}")
    elif name != "auto":
        upscaler_spec(name)  # a ValueError naming close names
    g = settings.generate
    try:
        native = generator_spec(settings.model).native
    except ValueError:  # a path or an unregistered Hub id: known once loaded
        native = None
    w, h = g.width or native, g.height or native
    if w and h:
        plan_size((w, h), target=settings.target, fit=settings.fit)


def _check_controlnet(settings: RunSettings) -> None:
    """A ControlNet name that is unknown or of the other family, or a registry ControlNet
    that offline mode cannot reach, refused before any work (a registered model's family
    is known now; a path's once it loads)."""
    from .generate import controlnet_availability
    from .registry import controlnet_spec, generator_spec
    from .weights import offline_mode

    try:
        model = generator_spec(settings.model)
    except ValueError:
        return
    spec = controlnet_spec(settings.controlnet, model.family, model.tiny)
    if spec is not None and offline_mode() and controlnet_availability(spec) == "download":
        raise FileNotFoundError(
            f"the tile ControlNet {spec.name} ({spec.repo}) is not on this machine and offline "
            f"mode is on: run once with internet on (or `huggingface-cli download "
            f"{spec.repo}`), attach it as a Kaggle model or dataset, or pass --controlnet a "
            "local diffusers ControlNet folder")


def resolve_upscaler(settings: RunSettings, generator) -> tuple[RunSettings, str | None]:
    """``settings`` with upscaler model "auto" replaced by the network it means for this
    generator's base size and the target (pegu.upscale.auto_upscaler), and why; unchanged
    settings and None otherwise."""
    from .upscale import auto_upscaler

    if settings.upscale.model != "auto" or settings.mode == "direct":
        return settings, None
    g = generator.resolve(settings.generate)
    name, why = auto_upscaler((g.width, g.height), settings.target)
    return replace(settings, upscale=replace(settings.upscale, model=name)), why


def _check_upscaler(settings: RunSettings, upscaler) -> None:
    """What a result records must be what ran: refuse, before any work, a loaded upscaler
    that differs from the settings in any field."""
    if upscaler is not None and settings.mode != "direct" and not upscaler.matches(
            settings.upscale):
        raise ValueError(f"the upscaler passed is {upscaler!r}, but the settings ask for "
                         f"{settings.upscale}; pass a matching one, or none to load it")


def _generate(settings: RunSettings, generator, progress: bool) -> RunResult:
    """Stage 1: the base image (the final one in direct mode), or an "oom" result."""
    import torch

    from .device import describe

    if generator.name != settings.model and generator.source != settings.model:
        raise ValueError(f"the generator passed is {generator.name!r} but the settings name "
                         f"{settings.model!r}")
    dev = generator.device
    g = generator.resolve(settings.generate)
    if settings.mode == "direct":
        g = replace(g, width=settings.target[0], height=settings.target[1])
    settings = replace(settings, generate=g, model=generator.name)
    result = RunResult(settings=settings, choices={
        "device": describe(dev), "dtype": str(generator.dtype).removeprefix("torch."),
        "generator_source": generator.source, "vae_fp32_fallback": False})
    try:
        gen = measure_stage(result.stages, "generate", dev,
                            lambda: generator.generate(g, progress=progress))
    except torch.OutOfMemoryError as e:
        if settings.mode != "direct":
            raise
        peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else 0
        result.stages.append(StageCost("generate", 0.0, peak, "vram"))
        result.status, result.error = "oom", f"out of memory generating {g.width}x{g.height}: {e}"
        result.choices["memory"] = generator.memory
        return result
    result.base = gen.image
    result.choices.update(memory=generator.memory, vae_fp32_fallback=gen.vae_fp32_fallback,
                          warnings=list(gen.warnings), embeddings=dict(gen.embeddings),
                          loras=dict(gen.loras))
    if settings.mode == "direct":
        result.image = gen.image
    return result


def _upscale(result: RunResult, generator, upscaler, progress: bool) -> RunResult:
    """Stages 2-4 on a generated ``result``: refine (optional) and upscale to the target."""
    from .device import describe
    from .upscale import load_upscaler_from

    settings, g = result.settings, result.settings.generate

    def stage(name, device, fn):
        return measure_stage(result.stages, name, device, fn)

    if upscaler is None:
        upscaler = stage("load upscaler", generator.device,
                         lambda: load_upscaler_from(settings.upscale, generator.device))

    if not Path(settings.upscale.model).suffix:  # a registry alias: record the real name
        settings = replace(settings, upscale=replace(settings.upscale, model=upscaler.name))
        result.settings = settings
    result.choices.update(upscaler_source=upscaler.source, tile_limit=upscaler.tile,
                          upscaler_dtype=str(upscaler.dtype).removeprefix("torch."),
                          upscaler_engine=upscaler.engine)
    if upscaler.device != generator.device:
        result.choices["upscaler_device"] = describe(upscaler.device)
    image = result.base
    if settings.refine_tiled:  # upscale to the target, then tiled img2img there
        return _tiled_refine(result, generator, upscaler, image, progress)
    # 2-3. refine: ESRGAN to the intermediate size, then img2img there
    if settings.refine is not None:
        size = _refine_size(image.size, settings)
        result.choices["refine_size"] = f"{size[0]}x{size[1]}"
        image = stage("upscale to refine size", upscaler.device, lambda: upscaler.run(
            image, target=size, fit=settings.fit, progress=progress)).image
        refined = stage("refine", generator.device, lambda: generator.refine(
            image, g, settings.refine, settings.refine_steps, progress=progress,
            control=settings.refine_control, controlnet=settings.controlnet))
        image = result.intermediate = refined.image
        _record_refine(result, refined)
    # face detail where a face is still small (before the final upscale)
    if settings.faces is not None and settings.faces.at == "base":
        image = _faces(result, generator, image, progress)
    # 4. upscale to the exact target
    up = stage("upscale", upscaler.device, lambda: upscaler.run(
        image, target=settings.target, fit=settings.fit, progress=progress))
    result.image = up.image
    result.choices.update(tile=up.tile, tiles=up.tiles, upscale_passes=up.passes)
    if settings.faces is not None and settings.faces.at == "target":
        result.image = _faces(result, generator, result.image, progress)
    return result


def _tiled_refine(result: RunResult, generator, upscaler, image, progress: bool):
    """Stages with ``refine_tiled``: faces (at the base), ESRGAN to the target, then
    img2img at the target on native-size latent tiles (MultiDiffusion)."""
    settings = result.settings
    if settings.faces is not None and settings.faces.at == "base":
        image = _faces(result, generator, image, progress)
    up = measure_stage(result.stages, "upscale", upscaler.device, lambda: upscaler.run(
        image, target=settings.target, fit=settings.fit, progress=progress))
    result.choices.update(tile=up.tile, tiles=up.tiles, upscale_passes=up.passes,
                          refine_size=f"{up.image.width}x{up.image.height}")
    result.intermediate = up.image
    refined = measure_stage(
        result.stages, "refine (tiled)", generator.device, lambda: generator.refine(
            up.image, settings.generate, settings.refine, settings.refine_steps,
            progress=progress, tiled=True, control=settings.refine_control,
            controlnet=settings.controlnet))
    _record_refine(result, refined)
    result.image = refined.image
    if settings.faces is not None and settings.faces.at == "target":
        result.image = _faces(result, generator, result.image, progress)
    return result


def _record_refine(result: RunResult, refined) -> None:
    """What the refine used: the fp32 VAE fallback, the ControlNet and its source."""
    result.choices["vae_fp32_fallback"] |= refined.vae_fp32_fallback
    if refined.controlnet is not None:
        result.choices.update(controlnet=refined.controlnet,
                              controlnet_source=refined.controlnet_source)
        if "/" not in refined.controlnet:  # a registry name is what a re-run loads
            result.settings = replace(result.settings, controlnet=refined.controlnet)


def _faces(result: RunResult, generator, image, progress: bool):
    """The face detail stage on ``image``; its boxes go to ``result.choices["faces"]``."""
    from .faces import refine_faces

    settings = result.settings
    image, found = measure_stage(result.stages, "faces", generator.device, lambda: refine_faces(
        image, generator, settings.generate, settings.faces, progress=progress))
    result.choices["faces"] = [list(f.crop) for f in found]
    return image


def _refine_size(size: tuple[int, int], settings: RunSettings) -> tuple[int, int]:
    """The intermediate size: long side ``refine_size`` (default twice the base, at most the
    target's long side), the base's aspect ratio, multiples of 8."""
    w, h = size
    long_side = settings.refine_size or min(2 * max(w, h), max(settings.target))
    k = long_side / max(w, h)
    return max(8, round(w * k / 8) * 8), max(8, round(h * k / 8) * 8)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("pegu", "torch", "diffusers", "transformers", "basicsr", "realesrgan"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def describe_record(path) -> str:
    """A saved image's recipe as text (``pegu info``)."""
    from .metadata import read_record

    rec = read_record(path)
    lines = [f"{path}"]
    if rec["parameters"]:
        lines += ["", "parameters (AUTOMATIC1111):", rec["parameters"]]
    if rec["pegu"]:
        p = rec["pegu"]
        lines += ["", "pegu settings:", json.dumps(p["settings"], indent=2, ensure_ascii=False)]
        for s in p.get("stages", []):
            lines.append(f"  {s['stage']:24} {s['seconds']:8.2f} s  "
                         f"{s['peak_bytes'] / 2**20:8.0f} MiB {s['memory']}")
        lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in p.get("versions", {}).items()))
    if not rec["parameters"] and not rec["pegu"]:
        lines.append("no generation settings in this image")
    return "\n".join(lines)
