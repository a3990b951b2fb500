"""Tile ControlNets for the refine: loaded once per generator, with the img2img pipeline
that runs them."""
from __future__ import annotations

from dataclasses import dataclass

from ..core import compat
from ..sources import from_pretrained
from ..sources.resolve import built_folder
from .tiny import build_tiny_controlnet, tiny_folder


@dataclass
class LoadedControlNet:
    """A ControlNet a generator has loaded: the model, its registry entry (None for a Hub id
    or folder), where it came from, and the img2img pipeline that runs it."""

    model: object
    spec: object
    source: str
    given: str | None = None  # the Hub id or folder asked for, when not a registry entry
    pipe: object = None

    @property
    def name(self) -> str:
        """What a re-run loads: the registry name, else the Hub id or folder asked for."""
        return self.spec.name if self.spec is not None else self.given


def load_controlnet(which, dtype, offline: bool):
    """(ControlNetModel, where it came from) for a registry spec (pegu.core.registry
    CONTROLNETS), a Hub id or a diffusers ControlNet folder: the tiny ones are built in
    code; the others come from wherever pegu.sources finds them."""
    from diffusers import ControlNetModel

    spec = None if isinstance(which, str) else which
    with compat.quiet_loading():
        if spec is not None and spec.tiny:
            where = tiny_folder(built_folder(spec), spec.family, build=build_tiny_controlnet)
            model = ControlNetModel.from_pretrained(str(where), torch_dtype=dtype)
            return model, f"{where} (built in code, random weights)"
        return from_pretrained(ControlNetModel.from_pretrained, spec.repo if spec else which,
                               marker="config.json", offline=offline,
                               revision=spec.revision if spec else None, torch_dtype=dtype)
