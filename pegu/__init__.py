"""pegu: Performance-Efficient Generative Upscaling.

Public entry points (imported lazily, so ``import pegu`` stays fast):
``run`` / ``run_many`` / ``RunSettings`` (the whole pipeline), ``read_settings``,
``load_generator`` / ``Generator``, ``load_upscaler`` / ``Upscaler``.
"""
from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "load_upscaler": "pegu.upscale",
    "Upscaler": "pegu.upscale",
    "UpscaleResult": "pegu.upscale",
    "UPSCALERS": "pegu.registry",
    "load_generator": "pegu.generate",
    "Generator": "pegu.generate",
    "GenerateResult": "pegu.generate",
    "GenerateSettings": "pegu.settings",
    "GENERATORS": "pegu.registry",
    "run": "pegu.pipeline",
    "run_many": "pegu.pipeline",
    "RunResult": "pegu.pipeline",
    "RunSettings": "pegu.settings",
    "UpscaleSettings": "pegu.settings",
    "read_settings": "pegu.metadata",
}

__all__ = ["__version__", *_LAZY]


_SUBMODULES = {"metrics", "sweep", "settings", "registry", "device", "upscale", "generate",
               "pipeline", "metadata", "images", "plots", "studies", "widgets", "kaggle"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:  # pegu.sweep.record(...) works after a bare `import pegu`
        return importlib.import_module(f"pegu.{name}")
    raise AttributeError(f"module 'pegu' has no attribute {name!r}")
