"""pegu: Performance-Efficient Generative Upscaling.

Public entry points (imported on first use, so ``import pegu`` stays fast):
``run`` / ``run_many`` / ``RunSettings`` (the whole pipeline), ``read_settings``,
``load_generator`` / ``Generator``, ``load_upscaler`` / ``Upscaler``, ``Models`` (loaded
models kept between runs), ``PeguError`` (what every refusal raises). The notebooks' helpers
are ``pegu.sweep``, ``pegu.studies``, ``pegu.plots``, ``pegu.widgets``, ``pegu.metrics``,
``pegu.iqa``, ``pegu.frontier`` and ``pegu.pipeline``.

The package is layered, imports pointing down only (docs/design.md): ``core`` ←
``sources`` ← ``upscale`` / ``generate`` ← ``pipeline`` ← ``lab`` ← ``cli``.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "load_upscaler": "pegu.upscale",
    "Upscaler": "pegu.upscale",
    "UpscaleResult": "pegu.upscale",
    "load_generator": "pegu.generate",
    "Generator": "pegu.generate",
    "GenerateResult": "pegu.generate",
    "run": "pegu.pipeline",
    "run_many": "pegu.pipeline",
    "RunResult": "pegu.pipeline",
    "Models": "pegu.pipeline",
    "read_settings": "pegu.pipeline",
    "GenerateSettings": "pegu.core.settings",
    "RunSettings": "pegu.core.settings",
    "UpscaleSettings": "pegu.core.settings",
    "FaceSettings": "pegu.core.settings",
    "UPSCALERS": "pegu.core.registry",
    "GENERATORS": "pegu.core.registry",
    "PeguError": "pegu.core.errors",
}

# the modules a notebook reaches as pegu.<name> after a bare `import pegu`
_MODULES = {"sweep": "pegu.lab.sweep", "studies": "pegu.lab.studies",
            "plots": "pegu.lab.plots", "widgets": "pegu.lab.widgets",
            "metrics": "pegu.lab.metrics", "iqa": "pegu.lab.iqa", "grid": "pegu.lab.grid",
            "frontier": "pegu.lab.frontier", "check": "pegu.lab.check",
            "judges": "pegu.lab.judges",
            "kaggle": "pegu.cli.kaggle", "settings": "pegu.core.settings",
            "registry": "pegu.core.registry", "errors": "pegu.core.errors",
            **{layer: f"pegu.{layer}" for layer in ("core", "sources", "upscale", "generate",
                                                   "pipeline", "lab", "cli")}}

__all__ = ["__version__", *_LAZY, *_MODULES]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'pegu' has no attribute {name!r}")
