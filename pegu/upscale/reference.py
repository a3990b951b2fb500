"""realesrgan's own ``RealESRGANer`` on the very same weights as a loaded upscaler: the
reference the tests and benchmarks check pegu against."""
from __future__ import annotations

from pathlib import Path

from ..core import compat
from ..core.registry import upscaler_spec
from .networks import network


def realesrganer_for(upscaler, folder, tile: int = 0, tile_pad: int = 10):
    """realesrgan's ``RealESRGANer`` running the very same weights as a loaded registry
    ``upscaler`` (saved into ``folder``), fp32 on the CPU: the reference of tests and
    benchmarks."""
    import torch

    spec = upscaler_spec(upscaler.name)
    path = Path(folder) / f"{spec.name}.pth"
    torch.save({"params_ema": upscaler.model.state_dict()}, path)
    return compat.realesrganer_class()(
        scale=spec.scale, model_path=str(path), model=network(spec.arch, spec.kwargs()),
        tile=tile, tile_pad=tile_pad, pre_pad=0, half=False, device=torch.device("cpu"))
