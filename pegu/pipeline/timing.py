"""Measuring runs as a benchmark does: each stage's wall time and peak memory, an untimed
warm-up per shape, repeats and the median run."""
from __future__ import annotations

from dataclasses import replace

from ..core.settings import RunSettings, check_repeats
from .plan import resolve_upscaler
from .result import RunResult
from .stages import run


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


def timed_run(settings: RunSettings, generator, upscaler=None, *, repeats: int = 1,
              warmup: bool = True, progress: bool = False) -> RunResult:
    """``run`` measured as a benchmark: :func:`warm_up` first (unless ``warmup`` is False),
    then ``repeats`` runs. Returns the run whose total time is the median (the lower one of
    the middle two for an even count), its image and stage costs, with every repeat's total
    in ``repeat_seconds``. Clocks are read after CUDA synchronizes (pegu.core.device.Measure)."""
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
