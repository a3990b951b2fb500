"""Community upscalers through spandrel: randomly initialised networks of each family,
saved as their community files are, load, tile and run in every dtype the CPU allows;
registry entries download, cache and come from Kaggle inputs; RealSR converts exactly."""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import pegu
from pegu.core import registry
from pegu.core.errors import WeightsError
from conftest import diff


def _families():
    from spandrel.architectures.ATD import ATD
    from spandrel.architectures.DAT import DAT
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.HAT import HAT
    from spandrel.architectures.OmniSR import OmniSR
    from spandrel.architectures.PLKSR import RealPLKSR
    from spandrel.architectures.SPAN import SPAN
    from spandrel.architectures.SwinIR import SwinIR

    small = dict(embed_dim=24, depths=[2], num_heads=[2], mlp_ratio=2, upsampler="pixelshuffle")
    return {  # name: (network, file suffix, spandrel's architecture id)
        "ESRGAN": (lambda: ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=2), ".pth"),
        "SwinIR": (lambda: SwinIR(upscale=4, img_size=32, window_size=8, **small), ".pth"),
        "HAT": (lambda: HAT(upscale=4, img_size=32, window_size=8, compress_ratio=3,
                            squeeze_factor=6, **small), ".safetensors"),
        "DAT": (lambda: DAT(upscale=4, img_size=32, embed_dim=24, split_size=[2, 4],
                            depth=[2], num_heads=[2], expansion_factor=2,
                            upsampler="pixelshuffle"), ".safetensors"),
        "ATD": (lambda: ATD(upscale=4, window_size=8, category_size=32, num_tokens=16,
                            reducted_dim=4, convffn_kernel_size=5, **small), ".pth"),
        "SPAN": (lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=16, upscale=4),
                 ".safetensors"),
        "RealPLKSR": (lambda: RealPLKSR(dim=16, n_blocks=2, upscaling_factor=4), ".pth"),
        "OmniSR": (lambda: OmniSR(num_in_ch=3, num_out_ch=3, num_feat=16, res_num=1,
                                  up_scale=4, window_size=8), ".pth"),
    }


def _save(net, path):
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"params_ema": state} if "ESRGAN" in path.stem else state, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("community")
    return {name: _save(make().eval(), out / f"{name}{suffix}")
            for name, (make, suffix) in _families().items()}


@pytest.mark.parametrize("family", list(_families()))
def test_each_family_loads_tiles_and_runs_in_each_dtype(family, files, astronaut):
    photo = np.ascontiguousarray(astronaut[150:246, 180:276])  # 96², real
    whole = pegu.load_upscaler(files[family], device="cpu", tile=0)
    assert whole.arch == {"RealPLKSR": "PLKSR"}.get(family, family)  # spandrel's id
    assert whole.scale == 4 and whole._desc is not None
    untiled = whole.run(photo, target=(384, 384))
    assert untiled.image.shape == (384, 384, 3)
    tiled = pegu.load_upscaler(files[family], device="cpu", tile=64, tile_overlap=16).run(
        photo, target=(384, 384))
    assert tiled.tiles == 4
    d = diff(tiled.image, untiled.image)
    if family == "OmniSR":  # global pooling in every block: tiles see other statistics
        assert d.mean() < 3
    else:  # local receptive fields: feathered tiles agree with the whole pass
        assert d.mean() <= 0.05 and d.max() <= 2, (d.mean(), d.max())
    if whole._desc.supports_bfloat16:
        bf16 = pegu.load_upscaler(files[family], device="cpu", tile=0, dtype="bf16")
        assert bf16.dtype == torch.bfloat16
        out = bf16.run(photo, target=(384, 384)).image
        assert out.shape == (384, 384, 3) and np.isfinite(out).all()
        assert diff(out, untiled.image).mean() < 8  # bf16 rounding, not a different net


def test_x1_x2_networks_and_exact_targets(tmp_path, astronaut):
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    photo = np.ascontiguousarray(astronaut[150:246, 180:276])
    x1 = _save(ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=1).eval(),
               tmp_path / "1x_restore.pth")
    up = pegu.load_upscaler(x1, device="cpu")
    assert up.scale == 1
    same = up.run(photo)  # a restorer runs once at the input's size
    assert same.image.shape == photo.shape and same.passes == 1
    bigger = up.run(photo, target=(200, 200))  # then the resize makes any target
    assert bigger.image.shape == (200, 200, 3) and bigger.passes == 1
    x2 = _save(ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=2).eval(),
               tmp_path / "2x_esrgan.pth")
    r = pegu.load_upscaler(x2, device="cpu", tile=64, tile_overlap=16).run(
        photo[:, :95], target=(380, 384))  # odd width: no x2plus pixel-unshuffle padding
    assert r.image.shape == (384, 380, 3) and r.passes == 2


def test_what_pegu_cannot_run_is_refused_clearly(tmp_path, files):
    from spandrel.architectures.ESRGAN import ESRGAN
    from spandrel.architectures.GFPGAN import GFPGAN

    from pegu.upscale.networks import spandrel_dtype as _spandrel_dtype

    gray = _save(ESRGAN(in_nc=1, out_nc=1, num_filters=16, num_blocks=1), tmp_path / "g.pth")
    with pytest.raises(WeightsError, match="1 input and 1 output channels; pegu runs RGB"):
        pegu.load_upscaler(gray, device="cpu")
    face = tmp_path / "GFPGANv1.4.pth"
    torch.save(GFPGAN().state_dict(), face)
    with pytest.raises(WeightsError, match="GFPGAN FaceSR model"):
        pegu.load_upscaler(face, device="cpu")
    junk = tmp_path / "junk.safetensors"
    save_file({"foo.weight": torch.zeros(3, 3)}, str(junk))
    with pytest.raises(WeightsError, match="nor an architecture spandrel knows"):
        pegu.load_upscaler(junk, device="cpu")
    with pytest.raises(ValueError, match=r"engine='ncnn' runs the Real-ESRGAN family "
                                         r"\(RRDBNet and SRVGGNetCompact\); DAT is DAT"):
        pegu.load_upscaler(files["DAT"], engine="ncnn")
    dat = pegu.load_upscaler(files["DAT"], device="cpu", tile=0)._desc
    assert not dat.supports_half  # spandrel: DAT overflows in fp16
    cuda = torch.device("cuda")
    with pytest.raises(ValueError, match=r"does not run in fp16 \(spandrel\); use dtype='bf16'"):
        _spandrel_dtype(dat, "fp16", torch.float16, cuda, "DAT")
    assert _spandrel_dtype(dat, "auto", torch.float16, torch.device("cpu"),
                           "DAT") == torch.float32


def test_tiling_hint_sets_the_default_tile(files):
    swinir = pegu.load_upscaler(files["SwinIR"], device="cpu")  # spandrel: discouraged
    assert swinir._desc.tiling.name == "DISCOURAGED" and swinir.tile == 0
    assert pegu.load_upscaler(files["SwinIR"], device="cpu", tile=64).tile == 64
    assert pegu.load_upscaler(files["HAT"], device="cpu").tile == 256


# ---- registry entries ----

def test_community_entries_have_source_checksum_and_licence(capsys):
    from pegu.cli import main

    names = ["4x-UltraSharp", "4x_NMKD-Siax_200k", "4xNomos8kSC", "4x-UltraSharpV2"]
    for name in names:
        spec = registry.upscaler_spec(name)
        assert spec.arch == "auto" and len(spec.sha256) == 64 and spec.licence
        assert spec.url.startswith(("https://huggingface.co/", "https://github.com/"))
    assert registry.upscaler_spec("UltraSharp").name == "4x-UltraSharp"
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in names) and "CC-BY-NC-SA-4.0" in out and "WTFPL" in out


@pytest.fixture()
def ultrasharp_file(tmp_path, monkeypatch):
    """A random ESRGAN saved as 4x-UltraSharp.pth, with the registry's checksum set to it."""
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(1)
    path = _save(ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1).eval(),
                 tmp_path / "4x-UltraSharp.pth")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    spec = registry.UPSCALERS["4x-UltraSharp"]
    monkeypatch.setitem(registry.UPSCALERS, spec.name, replace(spec, sha256=sha))
    return path


def test_community_model_offline_from_kaggle_then_download_then_cache(
        ultrasharp_file, tmp_path, monkeypatch, capsys, astronaut):
    import shutil

    from pegu.sources import resolve as upscale
    from pegu.cli import main
    from pegu.sources import cache_dir

    with pytest.raises(WeightsError, match=r"offline mode is on \(PEGU_OFFLINE\)\. Download https://huggingface"
                                           ".co/Kim2091/UltraSharp/.*4x-UltraSharp.pth to "):
        pegu.load_upscaler("4x-UltraSharp", device="cpu")
    kaggle = tmp_path / "input" / "datasets" / "me" / "upscalers"
    kaggle.mkdir(parents=True)
    shutil.copy(ultrasharp_file, kaggle / "4x-UltraSharp.pth")
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    up = pegu.load_upscaler("4x-UltraSharp", device="cpu")
    assert up.source == str(kaggle / "4x-UltraSharp.pth") and up.arch == "ESRGAN"
    monkeypatch.delenv("PEGU_KAGGLE_INPUT")
    # online: downloaded, checked against the published sha256, cached
    fetched = []

    def download(url, dest, sha256, **kw):
        fetched.append(url)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ultrasharp_file, dest)
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha256

    monkeypatch.setattr(upscale, "download", download)
    up = pegu.load_upscaler("4x-UltraSharp", device="cpu", offline=False)
    assert fetched == [registry.UPSCALERS["4x-UltraSharp"].url]
    assert up.source == str(cache_dir() / "upscalers" / "4x-UltraSharp.pth")
    # then offline from the cache, through the CLI, end to end
    from PIL import Image

    Image.fromarray(astronaut[:64, :64]).save(tmp_path / "in.png")
    assert main(["upscale", str(tmp_path / "in.png"), "--model", "4x-UltraSharp",
                 "--out", str(tmp_path / "o"), "--offline"]) == 0
    assert Image.open(tmp_path / "o" / "in_4x-UltraSharp_x4.png").size == (256, 256)
    assert fetched == [registry.UPSCALERS["4x-UltraSharp"].url]  # not fetched again


def test_a_community_file_that_is_not_the_published_one_is_not_used(
        ultrasharp_file, tmp_path, monkeypatch):
    spec = registry.UPSCALERS["4x-UltraSharp"]
    monkeypatch.setitem(registry.UPSCALERS, spec.name, replace(spec, sha256="0" * 64))
    kaggle = tmp_path / "input" / "other"
    kaggle.mkdir(parents=True)
    (kaggle / "4x-UltraSharp.pth").write_bytes(ultrasharp_file.read_bytes())
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    with warnings.catch_warnings(record=True) as caught, pytest.raises(WeightsError):
        warnings.simplefilter("always")
        pegu.load_upscaler("4x-UltraSharp", device="cpu")
    assert any("not the official 4x-UltraSharp" in str(w.message) for w in caught)


# ---- more real weights offline: RealSR and waifu2x's photo model, from ncnn packages ----

@pytest.mark.parametrize("name,size,blobs,scale", [
    ("RealSR_DF2K_x4", 48, ("data", "output"), 4),
    ("waifu2x_photo_x2", 48, ("Input1", "Eltwise4"), 2)])
def test_ncnn_photo_models_are_converted_exactly(name, size, blobs, scale, astronaut):
    import ncnn

    from pegu.sources import ncnn_files

    spec = registry.upscaler_spec(name)
    param, binary = ncnn_files(spec.ncnn, spec.ncnn_package)
    net = ncnn.Net()
    for opt in ("use_vulkan_compute", "use_fp16_storage", "use_fp16_packed",
                "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, opt, False)
    net.load_param(str(param))
    net.load_model(str(binary))
    x = (astronaut[150:150 + size, 180:180 + size].astype(np.float32) / 255)
    x = np.ascontiguousarray(x.transpose(2, 0, 1))
    pad = 7 if scale == 2 else 0  # UpConv7 pads its input itself (replicated edges)
    padded = np.ascontiguousarray(np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="edge"))
    ex = net.create_extractor()
    ex.input(blobs[0], ncnn.Mat(padded))  # the Mat borrows padded's memory: keep it alive
    _, out = ex.extract(blobs[1])
    up = pegu.load_upscaler(name, device="cpu", tile=0)
    assert up.source == f"{spec.ncnn_package.replace('_', '-')}:{spec.ncnn}"
    with torch.inference_mode():
        ours = up.model(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == np.array(out).shape == (3, scale * size, scale * size)
    assert np.abs(ours - np.array(out)).max() <= 1e-3
    # and it upscales a real photo to an exact target, tiled
    photo = np.ascontiguousarray(astronaut[100:196, 150:246])
    big = pegu.load_upscaler(name, device="cpu", tile=64, tile_overlap=16).upscale(
        photo, target=(384, 384))
    assert big.shape == (384, 384, 3)


def test_upconv7_has_no_ncnn_engine_path():
    with pytest.raises(ValueError, match=r"engine='ncnn' runs the Real-ESRGAN family "
                                         r"\(RRDBNet and SRVGGNetCompact\); "
                                         "waifu2x_photo_x2 is upconv7"):
        pegu.load_upscaler("waifu2x_photo_x2", engine="ncnn")


@pytest.mark.parametrize("family", ["ESRGAN", "SwinIR", "DAT"])
def test_pegu_upscale_runs_a_community_file_to_an_exact_size(family, files, tmp_path, astronaut):
    """The command a user types, in a fresh process: community file in, exact size out."""
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    Image.fromarray(astronaut[100:180, 150:230]).save(tmp_path / "face.png")
    pegu_cmd = Path(sys.executable).with_name("pegu")
    r = subprocess.run([str(pegu_cmd), "upscale", str(tmp_path / "face.png"), "--model",
                        str(files[family]), "--target", "300x300", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / f"face_{family}_300x300.png"
    assert Image.open(out).size == (300, 300)
    assert f"{family} x4 on cpu" in r.stderr
