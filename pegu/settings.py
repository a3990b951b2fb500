"""Settings are data: frozen dataclasses, validated on creation, round-tripped as dicts.

``to_dict()`` is what goes into PNG metadata, result rows and papermill parameters;
``from_dict()`` rebuilds the same settings (unknown keys are an error, not ignored).
"""
from __future__ import annotations

import difflib
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
    close = difflib.get_close_matches(name, SCHEDULERS, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
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
