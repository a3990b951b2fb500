"""What a run made and what it took: the stages' costs, the choices made on the way, the
images; saved as a PNG with its recipe."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.device import Measure
from ..core.errors import BadInput, OutputExists
from ..core.images import ensure_writable_dir, write_png
from ..core.settings import RunSettings
from .recipe import a1111_parameters, pnginfo, versions


@dataclass(frozen=True)
class StageCost:
    """One stage: wall time in seconds, peak memory in bytes (VRAM on CUDA, RSS on CPU)."""

    stage: str
    seconds: float
    peak_bytes: int
    memory: str


@dataclass
class Choices:
    """What a run actually used, beside the settings it was asked to run.

    device: the generator's device, described. dtype: the generator's ("fp16", ...).
    generator_source: where its weights came from. memory: its memory level (pegu.generate
    .memory). vae_fp32_fallback: the fp16 VAE overflowed and was decoded again in fp32.
    warnings: what the user should know about the prompt. embeddings: textual inversions
    used {name: short hash}. loras: LoRAs active {name: weight}. upscaler_choice: why
    "auto" meant that upscaler. upscaler_source / upscaler_device: where its weights came
    from and where it ran when not on the generator's device. refine_size: the size refined
    at, "WxH". tile: the largest upscaler tile run, input px (0: untiled); tiles: network
    passes; upscale_passes: times the network was applied. fallbacks: what ran out of GPU
    memory in this run and what was used instead. controlnet_source: where the refine's
    ControlNet came from. faces: the squares the face stage refined, (x0, y0, x1, y1).
    """

    device: str = ""
    dtype: str = ""
    generator_source: str = ""
    memory: str | None = None
    vae_fp32_fallback: bool = False
    warnings: list[str] = field(default_factory=list)
    embeddings: dict = field(default_factory=dict)
    loras: dict = field(default_factory=dict)
    upscaler_choice: str | None = None
    upscaler_source: str | None = None
    upscaler_device: str | None = None
    refine_size: str | None = None
    tile: int | None = None
    tiles: int | None = None
    upscale_passes: int | None = None
    fallbacks: list[str] = field(default_factory=list)
    controlnet_source: str | None = None
    faces: list | None = None


@dataclass
class RunResult:
    """What a run made and what it took.

    image: the final image (None when status is "oom"). base / intermediate: the generated
    image and, with refine, the refined one at the intermediate size. settings: the settings
    with every default resolved (what ``save`` stores). stages: one StageCost per stage.
    choices: what was actually used (:class:`Choices`).
    status: "ok" or "oom" (direct mode ran out of GPU memory; ``error`` says where).
    repeat_seconds: with :func:`pegu.pipeline.timed_run`, every repeat's total seconds
    (this result is the median one). warmed_up: whether first-call costs were kept out (an
    untimed warm-up of this shape ran before, :func:`pegu.pipeline.warm_up`).
    """

    settings: RunSettings
    image: object = None
    base: object = None
    intermediate: object = None
    stages: list[StageCost] = field(default_factory=list)
    choices: Choices = field(default_factory=Choices)
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
                f"{self.choices.device or '?'})")

    def record(self) -> dict:
        """Timings, choices and versions: the ``pegu`` PNG chunk beside the settings."""
        timing = {"warmed_up": self.warmed_up, "repeat_seconds": self.repeat_seconds}
        return {"stages": [vars(s) for s in self.stages], "choices": asdict(self.choices),
                "timing": timing, "status": self.status, "versions": versions()}

    def save(self, path, overwrite: bool = False) -> Path:
        """Write the final image as PNG with its recipe (A1111 ``parameters`` and ``pegu``
        JSON), atomically. Refuses to replace an existing file unless ``overwrite``."""
        if self.image is None:
            raise BadInput(f"nothing to save: the run ended with status {self.status!r}")
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise BadInput(f"pegu saves PNG (lossless, with metadata); got {path.name}")
        if path.exists() and not overwrite:
            raise OutputExists(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
        ensure_writable_dir(path.parent)
        extra = {"refine_size": self.choices.refine_size or ""}
        if self.choices.embeddings:  # as A1111 writes them
            extra["a1111"] = {"TI hashes": ", ".join(
                f"{n}: {h}" for n, h in self.choices.embeddings.items())}
        info = pnginfo(self.settings, self.record(), a1111_parameters(self.settings, extra))
        return write_png(self.image, path, pnginfo=info)


def stages_table(stages: list[StageCost]):
    """The stages as a pandas DataFrame: stage, seconds, peak_mib, memory."""
    import pandas as pd

    return pd.DataFrame([{"stage": s.stage, "seconds": round(s.seconds, 2),
                          "peak_mib": round(s.peak_bytes / 2**20), "memory": s.memory}
                         for s in stages])


def measure_stage(stages: list[StageCost], name: str, device, fn):
    """Call ``fn()``, append its StageCost (wall time, peak memory) to ``stages``; return
    what ``fn`` returned."""
    with Measure(device) as m:
        value = fn()
    stages.append(StageCost(name, round(m.seconds, 3), m.peak_bytes, m.memory_kind))
    return value
