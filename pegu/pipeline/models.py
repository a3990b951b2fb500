"""The one holder of loaded models: a run, a sweep and the explorer keep their generator and
upscaler here, and it loads or swaps them as each run's settings ask."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.device import resolve_device
from ..core.settings import RunSettings
from ..generate import Generator, load_generator
from ..upscale import Upscaler, load_upscaler_from
from .plan import precheck, resolve_upscaler
from .result import StageCost, measure_stage


@dataclass
class Ready:
    """A run ready to go: its settings (the upscaler "auto" replaced by the network it
    means), why that network, the models it runs on (no upscaler in direct mode), and
    what loading them cost (empty when they were loaded already)."""

    settings: RunSettings
    why: str | None
    generator: Generator
    upscaler: Upscaler | None
    loading: list[StageCost] = field(default_factory=list)


class Models:
    """Keeps one generator and one upscaler loaded between runs.

    device: where models load ("auto": CUDA if available); upscaler_device: where the
    upscaler loads (default: the generator's device). offline: never use the network
    (default: ``$PEGU_OFFLINE`` / ``$HF_HUB_OFFLINE``). generator / upscaler: models
    loaded already, used while the settings name them.
    """

    def __init__(self, device="auto", *, offline: bool | None = None, upscaler_device=None,
                 generator: Generator | None = None, upscaler: Upscaler | None = None):
        self.device = device
        self.upscaler_device = upscaler_device
        self.offline = offline
        self.generator = generator
        self.upscaler = upscaler

    def ready(self, settings: RunSettings) -> Ready:
        """Refuse what can be refused before loading (pegu.pipeline.plan.precheck), then
        load what ``settings`` need that is not loaded yet. A model of other settings is
        released before its replacement loads, so that two never share the memory."""
        # the device is resolved at most once a call (for the precheck and the loading)
        dev = resolve_device(self.device) if self.upscaler_device is None else None
        precheck(settings, self.offline, dev)
        loading: list[StageCost] = []
        g = self.generator
        if g is None or settings.model not in (g.name, g.source):
            self.generator = None
            dev = dev if dev is not None else resolve_device(self.device)
            g = self.generator = measure_stage(loading, "load generator", dev, lambda: (
                load_generator(settings.model, device=dev, offline=self.offline)))
        settings, why = resolve_upscaler(settings, g, self.offline)
        if settings.mode != "upscale":
            return Ready(settings, why, g, None, loading)
        u = self.upscaler
        if u is None or not u.matches(settings.upscale):
            self.upscaler = None
            dev = g.device if self.upscaler_device is None else \
                resolve_device(self.upscaler_device)
            u = self.upscaler = measure_stage(loading, "load upscaler", dev, lambda: (
                load_upscaler_from(settings.upscale, dev, offline=self.offline)))
        return Ready(settings, why, g, u, loading)

    def release(self) -> None:
        """Let go of both models (their memory is freed once nothing else holds them)."""
        self.generator = self.upscaler = None
