"""Settings are data: frozen dataclasses, validated on creation, round-tripped as dicts.

``to_dict()`` is what goes into PNG metadata, result rows and papermill parameters;
``from_dict()`` rebuilds the same settings (unknown keys are an error, not ignored).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# A1111 / model-card names -> how pegu builds them (pegu.generate.make_scheduler)
SCHEDULERS = ("DPM++ 2M Karras", "DPM++ SDE Karras", "DPM++ 2M SDE", "Euler a", "Euler",
              "DDIM", "UniPC")
MAX_SEED = 2**63 - 1


def check_scheduler(name: str) -> str:
    """The canonical spelling of a scheduler name; a ValueError suggests close ones."""
    for s in SCHEDULERS:
        if name.lower() == s.lower():
            return s
    from .registry import did_you_mean

    hint = did_you_mean(name, SCHEDULERS, cutoff=0.4)
    raise ValueError(f"unknown scheduler {name!r}.{hint} Known: {', '.join(SCHEDULERS)}")


def check_multiple_of_8(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < 64 or value > 8192:
        raise ValueError(f"{name} must be between 64 and 8192 pixels, got {value}")
    if value % 8:
        lo, hi = value - value % 8, value - value % 8 + 8
        raise ValueError(f"{name} must be a multiple of 8, got {value}; use {lo} or {hi}")


class _Data:
    """to_dict / from_dict shared by the settings classes."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}")
        return cls(**data)


@dataclass(frozen=True)
class GenerateSettings(_Data):
    """What to generate. ``None`` means "the model's recommendation" (registry).

    prompt / negative_prompt: text; CLIP reads 77 tokens, longer prompts are warned about.
    width, height: pixels, multiples of 8 (default: the model's native size).
    steps: denoising steps ≥ 1. guidance: classifier-free guidance scale ≥ 0 (≤ 1: off).
    scheduler: one of SCHEDULERS. seed: 0 … 2**63−1; image i of a batch uses seed + i.
    batch_size: images per call ≥ 1.
    """

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    seed: int = 0
    batch_size: int = 1

    def __post_init__(self):
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be text, got {type(self.prompt).__name__}")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise ValueError("negative_prompt must be text or None")
        for name in ("width", "height"):
            if getattr(self, name) is not None:
                check_multiple_of_8(name, getattr(self, name))
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be a whole number ≥ 1, got {self.steps!r}")
        if self.guidance is not None:
            if not isinstance(self.guidance, (int, float)) or not self.guidance >= 0:
                raise ValueError(f"guidance must be ≥ 0 (1 or less turns it off), "
                                 f"got {self.guidance!r}")
            object.__setattr__(self, "guidance", float(self.guidance))
        if self.scheduler is not None:
            object.__setattr__(self, "scheduler", check_scheduler(self.scheduler))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) \
                or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be a whole number in 0..{MAX_SEED}, got {self.seed!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size!r}")

    @property
    def seeds(self) -> list[int]:
        """The seed of each image in the batch."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.batch_size)]


# the upscaler's speed options (pegu.upscale.load_upscaler)
UPSCALER_DTYPES = ("auto", "fp32", "fp16", "bf16")
ENGINES = ("torch", "ncnn")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class UpscaleSettings(_Data):
    """The upscaler stage: a registry name or weights path, its tiling and denoise, and its
    speed path (dtype "auto"/"fp32"/"fp16"/"bf16", engine "torch"/"ncnn"; see
    ``load_upscaler``)."""

    model: str = "RealESRGAN_x4plus"
    tile: int | None = None      # None: 512 on CUDA, 256 on the CPU
    tile_overlap: int = 32
    denoise: float | None = None  # realesr-general-x4v3 only
    dtype: str = "auto"           # auto: fp16 on CUDA, fp32 on the CPU
    engine: str = "torch"         # ncnn: the exact fast CPU path

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("upscaler model must be a registry name or a weights path")
        if self.tile is not None and (not isinstance(self.tile, int) or self.tile < 0):
            raise ValueError(f"tile must be None (auto), 0 (untiled) or ≥ 64, got {self.tile!r}")
        if not isinstance(self.tile_overlap, int) or self.tile_overlap < 0:
            raise ValueError(f"tile_overlap must be ≥ 0, got {self.tile_overlap!r}")
        if self.dtype not in UPSCALER_DTYPES:
            raise ValueError(f"upscaler dtype must be auto, fp32, fp16 or bf16, got {self.dtype!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"upscaler engine must be 'torch' or 'ncnn', got {self.engine!r}")


MODES = ("upscale", "direct")


@dataclass(frozen=True)
class RunSettings(_Data):
    """One run of the pipeline: text -> image at ``target``.

    model: the text-to-image model (registry name, Hub id or path).
    generate: what to generate; its width/height are the base size (default: native).
    upscale: the upscaler stage. target: final (width, height) in pixels.
    fit: "cover" / "contain" when the base's aspect ratio differs from the target's.
    refine: img2img strength (0 < s < 1, e.g. 0.2–0.4) at ``refine_size`` between two
        upscales (A1111's hires fix); None: no refine. refine_steps: its steps (default:
        the generation steps). refine_size: the intermediate long side (default: twice the
        base, at most the target).
    mode: "upscale" (generate at base size, then upscale) or "direct" (generate at the
        target size, the baseline pegu compares against).
    """

    generate: GenerateSettings
    model: str = "realistic-vision-v6"
    upscale: UpscaleSettings = UpscaleSettings()
    target: tuple[int, int] = (2048, 2048)
    fit: str | None = None
    refine: float | None = None
    refine_steps: int | None = None
    refine_size: int | None = None
    mode: str = "upscale"

    def __post_init__(self):
        if isinstance(self.generate, dict):
            object.__setattr__(self, "generate", GenerateSettings.from_dict(self.generate))
        if isinstance(self.upscale, dict):
            object.__setattr__(self, "upscale", UpscaleSettings.from_dict(self.upscale))
        if not isinstance(self.generate, GenerateSettings):
            raise ValueError("generate must be a GenerateSettings")
        if self.generate.batch_size != 1:
            raise ValueError("a run makes one image; vary the seed in a sweep instead of "
                             f"batch_size={self.generate.batch_size}")
        try:
            w, h = (int(v) for v in self.target)
        except (TypeError, ValueError):
            raise ValueError(f"target must be (width, height), got {self.target!r}") from None
        object.__setattr__(self, "target", (w, h))
        for name, v in (("target width", w), ("target height", h)):
            if self.mode == "direct":
                check_multiple_of_8(name, v)
            if v < 1 or v > 16384:
                raise ValueError(f"{name} must be between 1 and 16384, got {v}")
        if self.fit not in (None, "cover", "contain"):
            raise ValueError(f"fit must be 'cover' or 'contain', got {self.fit!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.refine is not None:
            if not isinstance(self.refine, (int, float)) or not 0 < self.refine < 1:
                raise ValueError(f"refine is an img2img strength in (0, 1), e.g. 0.3; got "
                                 f"{self.refine!r}")
            if self.mode == "direct":
                raise ValueError("refine applies to mode='upscale', not 'direct'")
        if self.refine_steps is not None and (not isinstance(self.refine_steps, int)
                                              or self.refine_steps < 1):
            raise ValueError(f"refine_steps must be ≥ 1, got {self.refine_steps!r}")
        if self.refine_size is not None:
            check_multiple_of_8("refine_size", self.refine_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target"] = list(self.target)
        return d
