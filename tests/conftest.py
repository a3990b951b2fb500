"""Shared fixtures: real photographs, real Real-ESRGAN weights, no network."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

# Tests never touch the network and never write into the user's cache (pyiqa's and FID's
# weights live under torch's hub folder).
os.environ["PEGU_OFFLINE"] = "1"
os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="pegu-test-torch-home-")


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
    from pegu.upscale.reference import realesrganer_for

    return realesrganer_for(upscaler, tmp_path, tile=tile, tile_pad=tile_pad)


def reference_upscale(upscaler, image: np.ndarray, tmp_path, **kw) -> np.ndarray:
    """RealESRGANer's output for an RGB(A)/gray uint8/uint16 array, back in RGB order."""
    r = realesrganer(upscaler, tmp_path, **kw)
    bgr = image[..., [2, 1, 0, 3][: image.shape[2]]] if image.ndim == 3 else image
    out, _ = r.enhance(np.ascontiguousarray(bgr))
    return out[..., [2, 1, 0, 3][: out.shape[2]]] if out.ndim == 3 else out


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory):
    """Four real photographs (scikit-image's) as PNG files, centre crops of at most 512²."""
    from PIL import Image
    from skimage import data

    out = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        img = getattr(data, name)()
        img = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
        h, w = img.shape[:2]
        y, x = (h - min(h, 512)) // 2, (w - min(w, 512)) // 2
        Image.fromarray(img[y:y + 512, x:x + 512, :3]).save(out / f"{name}.png")
    return out


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory):
    """torch-fidelity's Inception-v3 with random weights, saved as its weights file is."""
    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    real_load, real_url = fe.FeatureExtractorInceptionV3.load_state_dict, fe.load_state_dict_from_url
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, state: None
    fe.load_state_dict_from_url = lambda *a, **k: {}
    try:
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        for m in net.modules():  # He init keeps activations alive through ~90 layers
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    finally:
        fe.FeatureExtractorInceptionV3.load_state_dict, fe.load_state_dict_from_url = \
            real_load, real_url
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path
