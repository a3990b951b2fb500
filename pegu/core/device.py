"""Resolve device and dtype once; measure wall time and peak memory."""
from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from dataclasses import dataclass

from .errors import BadInput, GpuUnsupported, OutOfMemory

_DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
           "half": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def resolve_device(device="auto"):
    """``"auto"`` -> CUDA if available, else CPU; otherwise ``torch.device(device)``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInput(f"device {device!r} asked for, but torch sees no CUDA GPU; "
                         "use device='cpu' or 'auto'")
    return dev


def dtype_name(dtype) -> str:
    """A torch dtype as settings name it: "fp32", "fp16" or "bf16"."""
    name = str(dtype).removeprefix("torch.")
    return {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}.get(name, name)


def resolve_dtype(dtype, device):
    """``"auto"`` -> fp16 on CUDA, fp32 on the CPU. fp16 on the CPU is refused."""
    import torch

    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    elif dtype in (None, "auto"):
        name = "float16" if device.type == "cuda" else "float32"
    else:
        name = _DTYPES.get(str(dtype).lower())
        if name is None:
            raise BadInput(f"unknown dtype {dtype!r}; use 'auto', 'fp32', 'fp16' or 'bf16'")
    if name == "float16" and device.type == "cpu":
        raise BadInput("fp16 on the CPU is not supported (slow and inexact there); use "
                         "dtype='fp32' (exact) or 'bf16' (fast on CPUs with AVX-512 BF16)")
    if name not in ("float32", "float16", "bfloat16"):
        raise BadInput(f"dtype {name} is not supported; use 'fp32', 'fp16' or 'bf16'")
    return getattr(torch, name)


@contextlib.contextmanager
def autotuned(device):
    """cuDNN's autotuner on for this block on CUDA (a stage runs a few shapes many times:
    each is tuned once), and set back as it was after it."""
    if getattr(device, "type", None) != "cuda":
        yield
        return
    import torch

    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def describe(device) -> str:
    """One line naming the device, e.g. 'cuda:0 (Tesla T4, sm_75, 15.6 GiB)'."""
    import torch

    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{device} ({p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB)"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


@dataclass
class Measure:
    """Wall time and peak memory of a ``with`` block.

    On CUDA, peak is ``torch.cuda.max_memory_allocated`` (VRAM); on the CPU, the process's
    peak resident set size (Linux VmHWM, reset at the block's start).
    """

    device: object = None
    seconds: float = 0.0
    peak_bytes: int = 0

    @property
    def memory_kind(self) -> str:
        return "vram" if self._cuda else "rss"

    @property
    def _cuda(self) -> bool:
        return getattr(self.device, "type", None) == "cuda"

    def __enter__(self):
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _reset_peak_rss()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak_bytes = peak_rss()
        self.seconds = time.perf_counter() - self._t0
        return False


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 to clear_refs resets VmHWM
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _proc_bytes(path: str, field: str) -> int | None:
    """A ``field:  N kB`` line of a Linux /proc file, in bytes; None where there is none."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def available_memory() -> int | None:
    """Bytes of RAM this machine can still give (Linux MemAvailable); None if unknown."""
    return _proc_bytes("/proc/meminfo", "MemAvailable")


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (since the last reset on Linux)."""
    peak = _proc_bytes("/proc/self/status", "VmHWM")
    if peak is not None:
        return peak
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def gpu_count() -> int:
    """CUDA GPUs this process sees (0 without CUDA): two on Kaggle's GPU T4 x2."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_problem(capability: tuple[int, int], arch_list: list[str], torch_version: str,
                torchvision_version: str | None = None) -> str | None:
    """Why this torch build cannot run on a GPU of ``capability``, with the fix; else None.

    A build runs on compute capability X.Y if it ships sm_X.Z kernels with Z ≤ Y, or PTX
    (compute_N) for an older architecture that the driver can compile (Kaggle's default
    image, from March 2026, has neither for a P100, sm_60).
    """
    major, minor = capability
    for arch in arch_list:
        kind, _, num = arch.partition("_")
        if not num.isdigit():
            continue
        a_major, a_minor = int(num[:-1]), int(num[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return None
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return None
    base = torch_version.split("+")[0]
    vision = f" torchvision=={torchvision_version.split('+')[0]}" if torchvision_version else \
        " torchvision"
    return (f"this torch {torch_version} has no kernels for your GPU (compute capability "
            f"{major}.{minor}, sm_{major}{minor}; the build has {', '.join(arch_list) or 'none'})."
            f" Install the CUDA 12.6 build, which still carries them: pip install "
            f"torch=={base}{vision} --index-url https://download.pytorch.org/whl/cu126 "
            "(then restart the kernel), or switch the accelerator to a T4 or L4.")


def check_gpu(device, dtype=None) -> None:
    """Fail before any work if torch cannot run on this CUDA device, or ``dtype`` is bf16
    on a GPU without native bf16 (Pascal and older, compute capability < 8.0 is emulated;
    < 7.0 refused)."""
    import torch

    if getattr(device, "type", None) != "cuda":
        return
    capability = torch.cuda.get_device_capability(device)
    try:
        import torchvision

        vision = torchvision.__version__
    except ImportError:
        vision = None
    problem = gpu_problem(capability, torch.cuda.get_arch_list(), torch.__version__, vision)
    if problem:
        raise GpuUnsupported(problem)
    if dtype == torch.bfloat16 and capability < (7, 0):
        raise GpuUnsupported(f"this GPU (sm_{capability[0]}{capability[1]}) has no bf16; use "
                         "dtype='fp16'")


def compile_supported(capability: tuple[int, int] | None) -> bool:
    """torch.compile's GPU backend (Triton) needs compute capability 7.0 or newer."""
    return capability is not None and capability >= (7, 0)


def compiled(model, dev, mode: str = "default", *, refuse: bool = False):
    """``torch.compile(model, mode=mode)``; on a GPU Triton does not support (a P100) a
    GpuUnsupported when ``refuse``, else a warning and the model itself, uncompiled."""
    import warnings

    import torch

    if dev.type == "cuda":
        cap = torch.cuda.get_device_capability(dev)
        if not compile_supported(cap):
            why = (f"torch.compile needs CUDA compute capability 7.0 or newer (Triton); this "
                   f"GPU has {cap[0]}.{cap[1]}")
            if refuse:
                raise GpuUnsupported(f"{why}: leave compile off on it")
            warnings.warn(f"{why}: running uncompiled", stacklevel=3)
            return model
    return torch.compile(model, mode=mode, dynamic=False)


# bytes per output pixel held at once: the float32 blend buffer (in RAM only when the
# network runs on the CPU), a resized float32 copy and the uint8 result
_BYTES_PER_PIXEL = {"cpu": 3 * 4 + 3 * 4 + 3, "cuda": 3 * 4 + 3}


# bytes per target pixel the tiled refine adds in RAM: the image as float planes for the
# VAE, the VAE's tiled decode (rows of overlapping tiles, about 1.8x the image) and the
# decoded image in float (measured: tiny-sd15 on the CPU, 2048² against the plain upscale,
# about 57 B/px); on a GPU those planes are fp16 there and the RAM keeps the float copy
_TILED_REFINE_BYTES = {"cpu": 60, "cuda": 30}
_TILED_REFINE_GPU_BYTES = 24


def check_output_memory(size: tuple[int, int], device, tiled_refine: bool = False) -> None:
    """Refuse, before any work, an output of ``size`` (w, h) that this machine's free RAM
    (or, for the tiled refine on a GPU, the GPU's memory) cannot hold while a network on
    ``device`` (a torch.device or "cpu" / "cuda") makes it; the message gives the estimate
    and the largest square target that fits."""
    kind = device if isinstance(device, str) else getattr(device, "type", "cpu")
    kind = kind.split(":")[0] if kind.split(":")[0] in _BYTES_PER_PIXEL else "cpu"
    per_pixel = _BYTES_PER_PIXEL[kind] + (_TILED_REFINE_BYTES[kind] if tiled_refine else 0)
    what = (f"a tiled refine to {size[0]}x{size[1]}" if tiled_refine
            else f"a {size[0]}x{size[1]} output")
    _refuse_beyond(size, per_pixel, available_memory(), what,
                   "RAM", "or free memory")
    if tiled_refine and kind == "cuda" and not isinstance(device, str):
        _refuse_beyond(size, _TILED_REFINE_GPU_BYTES, gpu_total_memory(device),
                       f"a tiled refine to {size[0]}x{size[1]}", "GPU memory",
                       "or the plain upscale (no refine_tiled)")


def _refuse_beyond(size, per_pixel: int, free: int | None, what: str, where: str,
                   other: str) -> None:
    need = size[0] * size[1] * per_pixel
    if free is not None and need > free:
        side = max(8, int((free / per_pixel) ** 0.5) // 8 * 8)
        raise OutOfMemory(f"{what} needs about {need / 2**30:.1f} GiB of {where} and "
                          f"{free / 2**30:.1f} GiB is free here: the largest square target "
                          f"that fits is about {side}x{side}; choose a smaller target {other}")


def gpu_total_memory(device) -> int | None:
    """Bytes of memory of the GPU ``device`` (a torch.device), None if it is no GPU."""
    import torch

    if getattr(device, "type", None) != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(device).total_memory