"""What a run will do, decided before any work: the refusals that need no model (unknown
names, missing files, sizes that cannot fit), the upscaler "auto" stands for, the refine's
size."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..core.device import check_output_memory
from ..core.errors import BadInput, MissingFile, WeightsUnavailable
from ..core.geometry import plan_size
from ..core.registry import controlnet_spec, distill_spec, generator_spec, upscaler_spec
from ..core.settings import RunSettings
from ..generate.faces import check_restorer
from ..sources import at_hand, cached_file, file_availability, is_offline
from ..sources.resolve import offline_reason, unavailable
from ..upscale import auto_upscaler


def precheck(settings: RunSettings, offline: bool | None = None, device=None) -> None:
    """What can be refused before any model loads: an unknown upscaler or face restorer or
    a missing weights file (a registry restorer, ControlNet or distillation LoRA not at hand
    offline too; a distillation of the other family), a
    target whose output (or tiled refine) this machine's RAM (or ``device``'s memory, a
    torch.device) cannot hold, and a base size whose aspect ratio
    differs from the target's without ``fit``."""
    if settings.faces is not None and settings.faces.restore:
        check_restorer(settings.faces.restore, offline)
    if settings.refine_control is not None:
        _check_controlnet(settings, is_offline(offline))
    if settings.generate.distill is not None:
        _check_distill(settings, offline)
    if settings.mode == "direct":
        return
    # the output (and the tiled refine's planes) in memory: on ``device`` when known, else
    # the least any device needs
    check_output_memory(settings.target, device or "cuda", tiled_refine=settings.refine_tiled)
    name = settings.upscale.model
    if Path(name).suffix:
        if not Path(name).expanduser().is_file():
            raise MissingFile(f"upscaler weights not found: {name}")
    elif name != "auto":
        upscaler_spec(name)  # BadInput naming close names
    g = settings.generate
    try:
        native = generator_spec(settings.model).native
    except BadInput:  # a path or an unregistered Hub id: known once loaded
        native = None
    w, h = g.width or native, g.height or native
    if w and h:
        plan_size((w, h), target=settings.target, fit=settings.fit)


def _check_controlnet(settings: RunSettings, offline: bool) -> None:
    """A ControlNet name that is unknown or of the other family, or a registry ControlNet
    that offline mode cannot reach, refused before any work (a registered model's family
    is known now; a path's once it loads)."""
    try:
        model = generator_spec(settings.model)
    except BadInput:
        return
    spec = controlnet_spec(settings.controlnet, model.family, model.tiny)
    if spec is not None and not at_hand(spec, offline):
        raise unavailable(spec.repo, offline, what=f"the tile ControlNet {spec.name}")


def _check_distill(settings: RunSettings, offline: bool | None) -> None:
    """A distillation that does not exist for a registered model's family, or whose LoRA
    is neither cached nor attached while offline, refused before any work."""
    try:
        model = generator_spec(settings.model)
    except BadInput:
        return
    d = distill_spec(settings.generate.distill)
    w = d.file(model.family)  # BadInput naming those that exist for this family
    if not model.tiny and file_availability(w) == "download" and is_offline(offline):
        raise WeightsUnavailable(
            f"{d.name}'s LoRA for {model.family} is not on this machine and pegu is offline "
            f"({offline_reason() or 'offline mode is on'}): download {w.url} to "
            f"{cached_file(w)}, or attach it to the Kaggle kernel")


def resolve_upscaler(settings: RunSettings, generator,
                     offline: bool | None = None) -> tuple[RunSettings, str | None]:
    """``settings`` with upscaler model "auto" replaced by the network it means for this
    generator's base size and the target (pegu.upscale.auto_upscaler), and why; unchanged
    settings and None otherwise."""
    if settings.upscale.model != "auto" or settings.mode == "direct":
        return settings, None
    g = generator.resolve(settings.generate)
    name, why = auto_upscaler((g.width, g.height), settings.target,
                              generator.offline if offline is None else offline)
    return replace(settings, upscale=replace(settings.upscale, model=name)), why


def refine_size(size: tuple[int, int], settings: RunSettings) -> tuple[int, int]:
    """The intermediate size: long side ``refine_size`` (default twice the base, at most the
    target's long side), the base's aspect ratio, multiples of 8; or the exact (width,
    height) the settings give."""
    if isinstance(settings.refine_size, tuple):
        return settings.refine_size
    w, h = size
    long_side = settings.refine_size or min(2 * max(w, h), max(settings.target))
    k = long_side / max(w, h)
    return max(8, round(w * k / 8) * 8), max(8, round(h * k / 8) * 8)
