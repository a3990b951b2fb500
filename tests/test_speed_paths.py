"""The speed levers of the upscaler (ncnn engine, batched tiles, torch.compile, GPU-only
choices) keep its output: each fast path is checked against the exact fp32 reference."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import pegu
from conftest import diff


@pytest.mark.parametrize("name", ["RealESRGAN_x4plus", "realesr-animevideov3"])
def test_ncnn_engine_is_exact(name, astronaut, x4plus, animevideo):
    """The exact fast CPU path: the same weights run by ncnn (Winograd convolutions)."""
    ref = x4plus if name == "RealESRGAN_x4plus" else animevideo
    up = pegu.load_upscaler(name, engine="ncnn", tile=0)
    assert (up.engine, up.device.type, up.dtype) == ("ncnn", "cpu", torch.float32)
    crop = np.ascontiguousarray(astronaut[150:214, 180:260])  # 80x64, not square
    assert diff(up.upscale(crop), ref.upscale(crop)).max() <= 1


def test_ncnn_engine_tiles_and_pixel_unshuffle(tmp_path, astronaut):
    """A local x2 RRDB file (its input pixel-unshuffled) through ncnn, tiled, odd sizes."""
    from pegu.upscale.networks import network as _network

    torch.manual_seed(0)
    net = _network("rrdb", dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2,
                                num_grow_ch=8, scale=2))
    for p in net.parameters():
        p.data.mul_(0.3)
    torch.save({"params_ema": net.state_dict()}, tmp_path / "x2.pth")
    torch_up = pegu.load_upscaler(tmp_path / "x2.pth", device="cpu", tile=64, tile_overlap=8)
    ncnn_up = pegu.load_upscaler(tmp_path / "x2.pth", engine="ncnn", tile=64, tile_overlap=8)
    img = np.ascontiguousarray(astronaut[7:140, 3:120])  # 117x133: odd, 2x3 tiles
    a, b = torch_up.run(img), ncnn_up.run(img)
    assert a.tiles == b.tiles == 6 and a.image.shape == (266, 234, 3)
    assert diff(a.image, b.image).max() <= 1


def test_ncnn_engine_refuses_cuda_and_bf16():
    for kw in (dict(device="cuda"), dict(dtype="bf16")):
        with pytest.raises(ValueError, match="engine='ncnn' runs fp32 on the CPU"):
            pegu.load_upscaler("realesr-animevideov3", engine="ncnn", **kw)
    with pytest.raises(ValueError, match="engine must be"):
        pegu.load_upscaler("realesr-animevideov3", engine="onnx")


def test_batched_tiles_match_one_at_a_time(animevideo, astronaut, monkeypatch):
    one = pegu.load_upscaler("realesr-animevideov3", device="cpu", tile=64, batch=1)
    many = pegu.load_upscaler("realesr-animevideov3", device="cpu", tile=64, batch=4)
    calls = []
    forward = many._forward
    monkeypatch.setattr(many, "_forward", lambda t: calls.append(len(t)) or forward(t))
    img = np.ascontiguousarray(astronaut[:200, :200])
    a, b = one.run(img), many.run(img)
    assert a.tiles == b.tiles == 36  # 6x6 tiles of 60 px in 4 window shapes
    assert sum(calls) == 36 and len(calls) == 1 + 2 + 2 + 4 and max(calls) == 4
    assert diff(a.image, b.image).max() <= 1
    with pytest.raises(ValueError, match="batch must be"):
        pegu.load_upscaler("realesr-animevideov3", device="cpu", batch=0)


def test_out_of_memory_runs_fewer_tiles_at_once_first(astronaut, monkeypatch):
    up = pegu.load_upscaler("realesr-animevideov3", device="cpu", tile=64, batch=8)
    forward = up._forward

    def limited(t):
        if len(t) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(t)

    monkeypatch.setattr(up, "_forward", limited)
    r = up.run(astronaut[:200, :200])
    assert r.batch == 2 and (r.tile, r.tiles) == (60, 36) and r.image.shape == (800, 800, 3)
    assert r.fallback == "out of GPU memory: batch 8 -> 4; out of GPU memory: batch 4 -> 2"
    # the fallback was this run's: the upscaler keeps its batch, and the next run says
    # again what it fell back to (nothing carried over silently)
    assert up.batch == 8 and up.run(astronaut[:200, :200]).fallback == r.fallback


def test_auto_batch_fits_half_the_free_gpu_memory(monkeypatch):
    from pegu.upscale.load import _auto_batch

    gib = 2**30
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (15 * gib, 16 * gib))
    # x4 fp16 tile 512: 6 × 64 ch × 2048² × 2 B = 3 GiB per tile -> 2 tiles in 7.5 GiB
    assert _auto_batch(cuda, torch.float16, 512, 4) == 2
    assert _auto_batch(cuda, torch.float16, 128, 4) == 8  # capped
    assert _auto_batch(cuda, torch.float32, 1024, 4) == 1  # never below one
    assert _auto_batch(torch.device("cpu"), torch.float32, 256, 4) == 1


def test_compile_is_skipped_with_a_warning_on_a_p100(monkeypatch):
    from pegu.core.device import compiled

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (6, 0))
    model = torch.nn.Conv2d(3, 3, 3)
    with pytest.warns(UserWarning, match="compute capability 7.0 or newer.*this GPU has 6.0"):
        assert compiled(model, torch.device("cuda")) is model
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev=None: (7, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compiled(model, torch.device("cuda")) is not model


def test_compile_modes_are_checked():
    with pytest.raises(ValueError, match="reduce-overhead"):
        pegu.load_upscaler("realesr-animevideov3", device="cpu", compile="fast")


def test_compiled_on_the_cpu_matches_eager(animevideo, astronaut):
    up = pegu.load_upscaler("realesr-animevideov3", device="cpu", tile=0, compile=True)
    crop = np.ascontiguousarray(astronaut[200:232, 200:248])
    assert diff(up.upscale(crop), animevideo.upscale(crop)).max() <= 1
