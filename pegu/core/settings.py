"""Settings are data: frozen dataclasses, validated on creation, round-tripped as dicts.

``to_dict()`` is what goes into PNG metadata, result rows and papermill parameters;
``from_dict()`` rebuilds the same settings (unknown keys are an error, not ignored).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .errors import BadInput
from .registry import did_you_mean, distill_spec

# Every bound and default of a setting is stated here, once; the CLI, the loaders and the
# checks read them from here.
MAX_SEED = 2**63 - 1
MAX_STEPS = 1000  # SD 1.5 and SDXL are trained on 1000 timesteps
MAX_SIDE = 16384  # the largest image side pegu makes (a 16384² RGB image is 0.8 GB)
MAX_REPEATS = 100  # timed runs per measurement
MAX_CLIP_SKIP = 12  # CLIP ViT-L/14's text encoder has 12 layers
TARGET = (2048, 2048)  # the final size pegu makes unless told otherwise

# A1111 sampler names pegu reproduces, each built as pegu.generate.SAMPLERS says (with its
# source); " Karras" and " Exponential" are A1111's pre-1.9 spellings of the schedule type.
SCHEDULERS = ("DPM++ 2M", "DPM++ 2M Karras", "DPM++ 2M SDE", "DPM++ 2M SDE Karras",
              "DPM++ 2M SDE Exponential", "DPM++ 2M SDE Heun", "DPM++ 2M SDE Heun Karras",
              "DPM++ 2M SDE Heun Exponential", "DPM++ SDE", "DPM++ SDE Karras", "Euler",
              "Euler a", "Heun", "LMS", "LMS Karras",
              "DPM2", "DPM2 Karras", "DPM2 a", "DPM2 a Karras", "DDIM", "UniPC",
              # the samplers of few-step distillations (registry.DISTILLATIONS)
              "LCM", "TCD", "Euler SGM Uniform", "DDIM Trailing")
# samplers made for distilled models: on another model they only make noise
DISTILLED_SAMPLERS = ("LCM", "TCD")
# A1111 samplers with no diffusers port: refused, naming the closest pegu has
NOT_REPRODUCED = {
    "DPM++ 2S a": ("DPM++ SDE", "diffusers has no port of k-diffusion's "
                   "sample_dpmpp_2s_ancestral (its scheduler table: N/A)"),
    "DPM++ 2S a Karras": ("DPM++ SDE Karras", "diffusers has no port of k-diffusion's "
                          "sample_dpmpp_2s_ancestral (its scheduler table: N/A)"),
    "DPM++ 3M SDE": ("DPM++ 2M SDE", "diffusers has no third-order SDE DPM-Solver"),
    "DPM fast": ("DPM++ 2M", "diffusers has no port of sample_dpm_fast"),
    "DPM adaptive": ("DPM++ 2M", "diffusers has no port of sample_dpm_adaptive"),
    "PLMS": ("LMS", "diffusers' PNDM differs from A1111's PLMS"),
    "Restart": ("DPM++ 2M Karras", "diffusers has no port of the Restart sampler"),
}
# A1111's "Schedule type" (v1.10 modules/sd_schedulers.py), each one's sigmas reproduced by
# pegu.generate.samplers.a1111_sigmas for every k-diffusion sampler below.
SCHEDULES = ("Automatic", "Uniform", "Karras", "Exponential", "Polyexponential",
             "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta")
# A1111's k-diffusion samplers (v1.10 modules/sd_samplers_kdiffusion.py, samplers_k_diffusion):
# the schedule "Automatic" picks, and whether the next-to-last sigma is discarded.
K_SAMPLERS = {"DPM++ 2M": ("Karras", False), "DPM++ SDE": ("Karras", False),
              "DPM++ 2M SDE": ("Exponential", False), "DPM++ 2M SDE Heun": ("Exponential", False),
              "Euler a": ("Uniform", False), "Euler": ("Uniform", False),
              "LMS": ("Uniform", False), "Heun": ("Uniform", False),
              "DPM2": ("Karras", True), "DPM2 a": ("Karras", True)}
# KL Optimal ends at the smallest sigma, not 0: only these diffusers schedulers can end there
_ENDS_ABOVE_ZERO = ("Euler", "DPM++ 2M", "DPM++ 2M SDE", "DPM++ 2M SDE Heun")


def check_schedule(name: str) -> str:
    """The canonical spelling of an A1111 schedule type (its alias "SGMUniform" too)."""
    if not isinstance(name, str):
        raise BadInput(f"schedule must be text, got {name!r}")
    key = name.lower().replace(" ", "").replace("_", "")
    for s in SCHEDULES:
        if key == s.lower().replace(" ", ""):
            return s
    raise BadInput(f"unknown schedule type {name!r}.{did_you_mean(name, SCHEDULES, cutoff=0.4)}"
                   f" Known (A1111's): {', '.join(SCHEDULES)}")


def _named_schedule(name: str) -> tuple[str, str | None]:
    """A pre-1.9 name split into the sampler and the schedule its suffix names."""
    for suffix in ("Karras", "Exponential"):
        if name.endswith(" " + suffix) and name.removesuffix(" " + suffix) in K_SAMPLERS:
            return name.removesuffix(" " + suffix), suffix
    return name, None


def resolve_schedule(scheduler: str, schedule: str | None) -> tuple[str, str | None]:
    """The sampler and the schedule A1111 would run for its ``Sampler`` and ``Schedule type``.

    The schedule is None for samplers that keep their own timesteps (DDIM, UniPC and the
    distillations' samplers: A1111 ignores the schedule type for its timestep samplers).
    No schedule means the sampler's name alone: Karras for a " Karras" name, else Uniform
    (A1111 before 1.9); "Automatic" is the sampler's own (K_SAMPLERS)."""
    name = check_scheduler(scheduler)
    base, named = _named_schedule(name)
    if base not in K_SAMPLERS:
        return name, None
    wanted = None if schedule is None else check_schedule(schedule)
    if named:
        if wanted not in (None, "Automatic", named):
            raise BadInput(f"{name!r} is {base!r} with the {named} schedule, not {wanted!r}: "
                           f"use scheduler {base!r} with schedule {wanted!r}")
        return base, named
    if wanted is None:
        return base, "Uniform"
    if wanted == "Automatic":
        wanted = K_SAMPLERS[base][0]
    if wanted == "KL Optimal" and base not in _ENDS_ABOVE_ZERO:
        raise BadInput(f"A1111's KL Optimal schedule ends above zero, which diffusers' "
                       f"{base!r} cannot do; it can with {', '.join(_ENDS_ABOVE_ZERO)}. "
                       "The closest schedule for it is 'Karras'")
    return base, wanted


def sampler_name(sampler: str, schedule: str | None = None) -> tuple[str, str | None]:
    """pegu's scheduler and schedule for A1111's ``Sampler`` and ``Schedule type`` fields
    (a DDIM or UniPC image's leftover schedule type is dropped, as A1111 ignores it)."""
    name = check_scheduler(sampler)
    base, named = _named_schedule(name)
    if base not in K_SAMPLERS:
        return name, None
    if schedule is not None:
        schedule = check_schedule(schedule)
        if named and schedule in ("Automatic", named):
            schedule = None
    resolve_schedule(name, schedule)  # refuses what cannot run
    return name, schedule


def check_scheduler(name: str) -> str:
    """The canonical spelling of a scheduler name; a BadInput names what to use instead."""
    for s in SCHEDULERS:
        if name.lower() == s.lower():
            return s
    for s, (closest, why) in NOT_REPRODUCED.items():
        if name.lower() == s.lower():
            raise BadInput(f"pegu does not reproduce A1111's {s!r}: {why}. The closest "
                             f"pegu has is {closest!r}")
    hint = did_you_mean(name, SCHEDULERS, cutoff=0.4)
    raise BadInput(f"unknown scheduler {name!r}.{hint} Known: {', '.join(SCHEDULERS)}")


PROMPT_SYNTAXES = ("a1111", "plain")


def check_multiple_of_8(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadInput(f"{name} must be an integer, got {value!r}")
    if value < 64 or value > 8192:
        raise BadInput(f"{name} must be between 64 and 8192 pixels, got {value}")
    if value % 8:
        lo, hi = value - value % 8, value - value % 8 + 8
        raise BadInput(f"{name} must be a multiple of 8, got {value}; use {lo} or {hi}")


def check_control_weight(name: str, value) -> float:
    """``value`` as a float if it is a ControlNet weight in (0, 2], else BadInput."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 2:
        raise BadInput(f"{name} is a ControlNet weight in (0, 2], e.g. 1.0; got {value!r}")
    return float(value)


def check_speedups(deepcache, branch, tome, compile) -> None:
    """DeepCache's interval (None or ≥ 2) and branch (≥ 0), ToMe's ratio (None or in
    (0, 0.9]) and a torch.compile mode (None or one of COMPILE_MODES)."""
    if deepcache is not None and (isinstance(deepcache, bool) or not isinstance(
            deepcache, int) or not 2 <= deepcache <= MAX_STEPS):
        raise BadInput(f"deepcache is a cache interval, a whole number ≥ 2 (DeepCache's "
                       f"paper uses 3-5), got {deepcache!r}")
    if isinstance(branch, bool) or not isinstance(branch, int) or not 0 <= branch <= 8:
        raise BadInput(f"deepcache_branch is the index of a down block, 0 (the shallowest, "
                       f"fastest) to 8, got {branch!r}")
    if tome is not None and (isinstance(tome, bool) or not isinstance(tome, (int, float))
                             or not 0 < tome <= 0.9):
        raise BadInput(f"tome is a token merging ratio in (0, 0.9], e.g. 0.5, got {tome!r}")
    if compile is not None and compile not in COMPILE_MODES:
        raise BadInput(f"compile must be one of {', '.join(COMPILE_MODES)}, got {compile!r}")


class _Data:
    """to_dict / from_dict shared by the settings classes."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise BadInput(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}")
        return cls(**data)


@dataclass(frozen=True)
class GenerateSettings(_Data):
    """What to generate. ``None`` means "the model's recommendation" (registry).

    prompt / negative_prompt: text. prompt_syntax "a1111" (default): AUTOMATIC1111's
        emphasis ``(word:1.2)``, ``[word]``, ``BREAK`` and any length (pegu.prompts);
        "plain": the text as it is, cut at CLIP's 77 tokens (with a warning).
    width, height: pixels, multiples of 8 (default: the model's native size).
    steps: denoising steps ≥ 1. guidance: classifier-free guidance scale ≥ 0 (≤ 1: off).
    scheduler: one of SCHEDULERS. schedule: A1111's "Schedule type" (SCHEDULES) for the
        k-diffusion samplers; None: the sampler name's own (" Karras" names: Karras, others
        Uniform, as A1111 before 1.9); "Automatic": the sampler's A1111 default. seed: 0 … 2**63−1; image i of a batch uses seed + i.
    batch_size: images per call ≥ 1.
    distill: a few-step distillation LoRA (registry.DISTILLATIONS: "lcm", "hyper-8",
        "hyper-8-cfg", "hyper-12-cfg", "dmd2-4", "lightning-4", "lightning-8"); its card's
        sampler, steps and guidance become the defaults, and others it cannot use are
        refused. None: the model as it is.
    deepcache: DeepCache's cache interval N ≥ 2 (Ma et al. 2024): the UNet's deep features
        are computed every N-th step and reused between; None: off. deepcache_branch: the
        down block whose output the partial steps still compute (0, the shallowest: fastest).
    tome: token merging ratio in (0, 0.9] (ToMe for SD, Bolya & Hoffman 2023; tomesd) at the
        highest-resolution attention; None: off.
    compile: torch.compile the UNet with this mode ("default", "reduce-overhead": CUDA
        graphs, ...); None: not compiled. Refused on GPUs older than compute capability 7.0.
    clip_skip: A1111's "Clip skip", 1 … 12: SD 1.5 reads CLIP's hidden state this many
        layers from the end (2: the penultimate); SDXL ignores it, as A1111 does.
    pad_prompts: A1111's "pad prompt/negative prompt" option ("Pad conds"): prompt and
        negative of different lengths padded to one; off (A1111's default): each runs at
        its own length.
    """

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    scheduler: str | None = None
    schedule: str | None = None
    seed: int = 0
    batch_size: int = 1
    prompt_syntax: str = "a1111"
    distill: str | None = None
    deepcache: int | None = None
    deepcache_branch: int = 0
    tome: float | None = None
    compile: str | None = None
    clip_skip: int = 1
    pad_prompts: bool = False

    def __post_init__(self):
        if self.prompt_syntax not in PROMPT_SYNTAXES:
            raise BadInput(f"prompt_syntax must be 'a1111' or 'plain', got "
                             f"{self.prompt_syntax!r}")
        if not isinstance(self.prompt, str):
            raise BadInput(f"prompt must be text, got {type(self.prompt).__name__}")
        if self.negative_prompt is not None and not isinstance(self.negative_prompt, str):
            raise BadInput("negative_prompt must be text or None")
        for name in ("width", "height"):
            if getattr(self, name) is not None:
                check_multiple_of_8(name, getattr(self, name))
        if self.steps is not None and (not isinstance(self.steps, int) or isinstance(
                self.steps, bool) or not 1 <= self.steps <= MAX_STEPS):
            raise BadInput(f"steps must be a whole number from 1 to {MAX_STEPS} (the models' "
                             f"training timesteps; A1111 offers up to 150), got {self.steps!r}")
        if self.guidance is not None:
            if not isinstance(self.guidance, (int, float)) or not 0 <= self.guidance <= 100:
                raise BadInput(f"guidance must be a number from 0 to 100 (1 or less turns it "
                                 f"off; model cards use 3-9), got {self.guidance!r}")
            object.__setattr__(self, "guidance", float(self.guidance))
        if self.scheduler is not None:
            object.__setattr__(self, "scheduler", check_scheduler(self.scheduler))
        if self.schedule is not None:
            object.__setattr__(self, "schedule", check_schedule(self.schedule))
            if self.scheduler is not None:
                resolve_schedule(self.scheduler, self.schedule)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) \
                or not 0 <= self.seed <= MAX_SEED:
            raise BadInput(f"seed must be a whole number in 0..{MAX_SEED}, got {self.seed!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise BadInput(f"batch_size must be ≥ 1, got {self.batch_size!r}")
        if self.distill is not None:
            if not isinstance(self.distill, str):
                raise BadInput(f"distill is a distillation name, got {self.distill!r}")
            object.__setattr__(self, "distill", distill_spec(self.distill).name)
        check_speedups(self.deepcache, self.deepcache_branch, self.tome, self.compile)
        if isinstance(self.clip_skip, bool) or not isinstance(self.clip_skip, int) or \
                not 1 <= self.clip_skip <= MAX_CLIP_SKIP:
            raise BadInput(f"clip_skip must be a whole number from 1 to {MAX_CLIP_SKIP} (A1111's "
                           f"'Clip skip'; 2 is common for anime models), got {self.clip_skip!r}")
        if not isinstance(self.pad_prompts, bool):
            raise BadInput(f"pad_prompts must be true or false, got {self.pad_prompts!r}")
        if self.tome is not None:
            object.__setattr__(self, "tome", float(self.tome))

    @property
    def seeds(self) -> list[int]:
        """The seed of each image in the batch."""
        return [(self.seed + i) % (MAX_SEED + 1) for i in range(self.batch_size)]


MIN_TILE = 64  # the smallest upscaler tile
TILE_OVERLAP = 32  # pixels neighbouring upscaler tiles share
# the upscaler's speed options (pegu.upscale.load_upscaler)
UPSCALER_DTYPES = ("auto", "fp32", "fp16", "bf16")
ENGINES = ("torch", "ncnn")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
FITS = ("cover", "contain")


def check_tile(tile, overlap) -> None:
    """The upscaler's tiling, refused unless ``tile`` is None (auto), 0 (untiled) or at
    least MIN_TILE, and ``overlap`` is 0 up to half the tile."""
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 0
                             or 0 < tile < MIN_TILE):
        raise BadInput(f"tile must be None (auto), 0 (untiled) or ≥ {MIN_TILE}, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise BadInput(f"tile_overlap must be ≥ 0, got {overlap!r}")
    if tile and 2 * overlap > tile:
        raise BadInput(f"tile_overlap must be at most tile/2 ({tile // 2}) for tile {tile}, "
                       f"got {overlap}")


def check_fit(fit) -> None:
    """``fit`` must be None, "cover" or "contain"."""
    if fit is not None and fit not in FITS:
        raise BadInput(f"fit must be 'cover' or 'contain', got {fit!r}")


def check_repeats(repeats, name: str = "repeats") -> int:
    """``repeats`` if it is a whole number from 1 to MAX_REPEATS, else BadInput."""
    if not isinstance(repeats, int) or isinstance(repeats, bool) or \
            not 1 <= repeats <= MAX_REPEATS:
        raise BadInput(f"{name} must be a whole number from 1 to {MAX_REPEATS}, "
                       f"got {repeats!r}")
    return repeats


@dataclass(frozen=True)
class UpscaleSettings(_Data):
    """The upscaler stage: a registry name or weights path, its tiling and denoise, and its
    speed path (dtype "auto"/"fp32"/"fp16"/"bf16", engine "torch"/"ncnn"; see
    ``load_upscaler``). model "auto" (the default): the official network that reaches the
    target with the least work — RealESRGAN_x2plus when the target is at most twice the base
    (SDXL 1024² -> 2048²), else RealESRGAN_x4plus (SD 1.5 512² -> 2048²); the run records
    the one it used."""

    model: str = "auto"
    tile: int | None = None      # None: 512 on CUDA, 256 on the CPU
    tile_overlap: int = TILE_OVERLAP
    denoise: float | None = None  # realesr-general-x4v3 only
    dtype: str = "auto"           # auto: fp16 on CUDA, fp32 on the CPU
    engine: str = "torch"         # ncnn: the exact fast CPU path

    def __post_init__(self):
        if not isinstance(self.model, str) or not self.model:
            raise BadInput("upscaler model must be a registry name or a weights path")
        check_tile(self.tile, self.tile_overlap)  # as load_upscaler: before any model loads
        if self.dtype not in UPSCALER_DTYPES:
            raise BadInput(f"upscaler dtype must be auto, fp32, fp16 or bf16, got {self.dtype!r}")
        if self.engine not in ENGINES:
            raise BadInput(f"upscaler engine must be 'torch' or 'ncnn', got {self.engine!r}")


MODES = ("upscale", "direct")
FACE_STAGES = ("base", "target")


@dataclass(frozen=True)
class FaceSettings(_Data):
    """The face detail stage (ADetailer's way): detect faces, img2img each crop at the
    model's native size, paste it back feathered and colour-matched.

    strength: img2img strength in (0, 1); low keeps identity (0.3–0.4). padding: the box
    grows by this share of its size on every side (context for the model). prompt: for the
    crops (default: the image's prompt). max_faces: the largest this many. min_size: smallest
    face side in pixels of the image where faces are detected. at: "base" (before the final
    upscale, where a face is small) or "target" (on the final image). restore: a face
    restorer run on each aligned face after the img2img ("GFPGANv1.4", "CodeFormer" or a
    weights file; None: none). fidelity: CodeFormer's weight w in [0, 1] (1 keeps the input
    face, 0 restores most).
    """

    strength: float = 0.35
    padding: float = 0.3
    prompt: str | None = None
    max_faces: int = 4
    min_size: int = 24
    at: str = "base"
    restore: str | None = None
    fidelity: float = 0.5

    def __post_init__(self):
        if isinstance(self.strength, bool) or not isinstance(self.strength, (int, float)) \
                or not 0 < self.strength < 1:
            raise BadInput(f"faces strength is an img2img strength in (0, 1), e.g. 0.35; "
                             f"got {self.strength!r}")
        if isinstance(self.padding, bool) or not isinstance(self.padding, (int, float)) \
                or not 0 <= self.padding <= 2:
            raise BadInput(f"faces padding is a share of the face box from 0 to 2, e.g. "
                             f"0.3; got {self.padding!r}")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise BadInput(f"faces prompt must be text, got {self.prompt!r}")
        for name, v, lo in (("max_faces", self.max_faces, 1), ("min_size", self.min_size, 8)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= 10_000:
                raise BadInput(f"faces {name} must be a whole number from {lo}, got {v!r}")
        if self.at not in FACE_STAGES:
            raise BadInput(f"faces at must be one of {FACE_STAGES}, got {self.at!r}")
        if self.restore is not None and (not isinstance(self.restore, str) or not self.restore):
            raise BadInput(f"faces restore is a restorer name (GFPGANv1.4, CodeFormer) or a "
                             f"weights file, got {self.restore!r}")
        if isinstance(self.fidelity, bool) or not isinstance(self.fidelity, (int, float)) \
                or not 0 <= self.fidelity <= 1:
            raise BadInput(f"faces fidelity is CodeFormer's weight in [0, 1], got "
                             f"{self.fidelity!r}")


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
        base, at most the target), or an exact (width, height) (an A1111 hires size). refine_tiled: refine at the target instead, after the
        upscale, the UNet running on overlapping latent tiles of the model's native size
        (MultiDiffusion; Ultimate SD Upscale's place in the pipeline): detail at the full
        size with memory bounded by the tile.
    refine_control: the weight of a tile ControlNet during the refine (0 < w ≤ 2; 1.0 is
        diffusers' default), conditioned on the image being refined: the structure holds,
        so higher refine strengths (0.4–0.7) add detail without inventing subjects; None:
        off.
    controlnet: which tile ControlNet (registry name, Hub id or folder; default: the
        model family's, pegu.registry.CONTROLNETS).
    mode: "upscale" (generate at base size, then upscale) or "direct" (generate at the
        target size, the baseline pegu compares against).
    faces: the face detail stage (:class:`FaceSettings`); None: off.
    """

    generate: GenerateSettings
    model: str = "realistic-vision-v6"
    upscale: UpscaleSettings = UpscaleSettings()
    target: tuple[int, int] = TARGET
    fit: str | None = None
    refine: float | None = None
    refine_steps: int | None = None
    refine_size: int | None = None
    refine_tiled: bool = False
    refine_control: float | None = None
    controlnet: str | None = None
    mode: str = "upscale"
    faces: FaceSettings | None = None

    def __post_init__(self):
        if isinstance(self.generate, dict):
            object.__setattr__(self, "generate", GenerateSettings.from_dict(self.generate))
        if isinstance(self.upscale, dict):
            object.__setattr__(self, "upscale", UpscaleSettings.from_dict(self.upscale))
        if isinstance(self.faces, dict):
            object.__setattr__(self, "faces", FaceSettings.from_dict(self.faces))
        if self.faces is not None and not isinstance(self.faces, FaceSettings):
            raise BadInput(f"faces must be FaceSettings (or its dict), got {self.faces!r}")
        if self.faces is not None and self.mode == "direct" and self.faces.at == "base":
            raise BadInput("faces at 'base' applies to mode='upscale'; use at='target' for "
                             "direct generation")
        if not isinstance(self.generate, GenerateSettings):
            raise BadInput("generate must be a GenerateSettings")
        if self.generate.batch_size != 1:
            raise BadInput("a run makes one image; vary the seed in a sweep instead of "
                             f"batch_size={self.generate.batch_size}")
        try:
            w, h = (int(v) for v in self.target)
            if any(isinstance(v, bool) or v != int(v) for v in self.target):
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise BadInput(f"target must be (width, height) in whole pixels, got "
                           f"{self.target!r}") from None
        object.__setattr__(self, "target", (w, h))
        for name, v in (("target width", w), ("target height", h)):
            if self.mode == "direct":
                check_multiple_of_8(name, v)
            if v < 1 or v > MAX_SIDE:
                raise BadInput(f"{name} must be between 1 and {MAX_SIDE}, got {v}")
        check_fit(self.fit)
        if self.mode not in MODES:
            raise BadInput(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.refine is not None:
            if not isinstance(self.refine, (int, float)) or not 0 < self.refine < 1:
                raise BadInput(f"refine is an img2img strength in (0, 1), e.g. 0.3; got "
                                 f"{self.refine!r}")
            if self.mode == "direct":
                raise BadInput("refine applies to mode='upscale', not 'direct'")
        if self.refine_steps is not None and (not isinstance(self.refine_steps, int)
                                              or not 1 <= self.refine_steps <= MAX_STEPS):
            raise BadInput(f"refine_steps must be a whole number from 1 to {MAX_STEPS}, "
                             f"got {self.refine_steps!r}")
        if isinstance(self.refine_size, (list, tuple)):  # an exact (width, height)
            if len(self.refine_size) != 2:
                raise BadInput(f"refine_size is a long side or (width, height), got "
                               f"{self.refine_size!r}")
            for name, v in zip(("refine width", "refine height"), self.refine_size):
                check_multiple_of_8(name, v)
            object.__setattr__(self, "refine_size", tuple(self.refine_size))
        elif self.refine_size is not None:
            check_multiple_of_8("refine_size", self.refine_size)
        if not isinstance(self.refine_tiled, bool):
            raise BadInput(f"refine_tiled must be true or false, got {self.refine_tiled!r}")
        if self.refine_tiled:
            if self.refine is None:
                raise BadInput("refine_tiled needs refine (its img2img strength), e.g. "
                                 "refine=0.3")
            if self.refine_size is not None:
                raise BadInput("refine_tiled refines at the target; leave refine_size out")
            for name, v in (("target width", w), ("target height", h)):
                check_multiple_of_8(name, v)
        if self.refine_control is not None:
            weight = check_control_weight("refine_control", self.refine_control)
            if self.refine is None:
                raise BadInput("refine_control conditions the refine: give refine (its "
                                 "img2img strength) too, e.g. refine=0.5")
            object.__setattr__(self, "refine_control", weight)
        if self.controlnet is not None:
            if not isinstance(self.controlnet, str) or not self.controlnet:
                raise BadInput(f"controlnet is a registry name, Hub id or folder, got "
                                 f"{self.controlnet!r}")
            if self.refine_control is None:
                raise BadInput("controlnet names the ControlNet of refine_control: give "
                                 "refine_control (its weight, e.g. 1.0) too")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["target"] = list(self.target)
        return d
