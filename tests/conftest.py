"""Shared fixtures: real photographs, real Real-ESRGAN weights, no network."""
from __future__ import annotations

import os

import numpy as np
import pytest

# Tests never touch the network and never write into the user's cache.
os.environ["PEGU_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEGU_CACHE", str(tmp_path / "pegu-cache"))


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    from skimage import data

    return data.coffee()


@pytest.fixture(scope="session")
def x4plus():
    """RealESRGAN_x4plus (official weights via the ncnn package), CPU fp32, untiled."""
    import pegu

    return pegu.load_upscaler("RealESRGAN_x4plus", device="cpu", tile=0)


@pytest.fixture(scope="session")
def animevideo():
    """realesr-animevideov3: the smallest real network, for tests about sizes and modes."""
    import pegu

    return pegu.load_upscaler("realesr-animevideov3", device="cpu", tile=0)


def diff(a, b) -> np.ndarray:
    """Per-pixel absolute difference of two images (PIL or numpy), in their own units."""
    return np.abs(np.asarray(a).astype(np.int64) - np.asarray(b).astype(np.int64))


def realesrganer(upscaler, tmp_path, tile=0, tile_pad=10):
    """realesrgan's own RealESRGANer with the very same weights as ``upscaler``."""
    import torch

    from pegu import _compat
    from pegu.registry import upscaler_spec
    from pegu.upscale import _network

    spec = upscaler_spec(upscaler.name)
    path = tmp_path / f"{spec.name}.pth"
    torch.save({"params_ema": upscaler.model.state_dict()}, path)
    return _compat.realesrganer_class()(
        scale=spec.scale, model_path=str(path), model=_network(spec.arch, spec.kwargs()),
        tile=tile, tile_pad=tile_pad, pre_pad=0, half=False, device=torch.device("cpu"))


def reference_upscale(upscaler, image: np.ndarray, tmp_path, **kw) -> np.ndarray:
    """RealESRGANer's output for an RGB(A)/gray uint8/uint16 array, back in RGB order."""
    r = realesrganer(upscaler, tmp_path, **kw)
    bgr = image[..., [2, 1, 0, 3][: image.shape[2]]] if image.ndim == 3 else image
    out, _ = r.enhance(np.ascontiguousarray(bgr))
    return out[..., [2, 1, 0, 3][: out.shape[2]]] if out.ndim == 3 else out
