"""The generator stage (layer 3 of 6, beside upscale): the Generator and its loading, the
memory policy, samplers, A1111 prompts, the tiled refine, tile ControlNets, the face stage
and the tiny test models."""
from .generator import GenerateResult, Generator, RefineResult
from .load import load_generator
from .memory import MEMORY_LEVELS, choose_memory
from .samplers import SAMPLERS, make_scheduler

__all__ = ["GenerateResult", "Generator", "MEMORY_LEVELS", "RefineResult", "SAMPLERS",
           "choose_memory", "load_generator", "make_scheduler"]
