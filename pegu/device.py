"""Resolve device and dtype once; measure wall time and peak memory."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass

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
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU; "
                         "use device='cpu' or 'auto'")
    return dev


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
            raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'fp32', 'fp16' or 'bf16'")
    if name == "float16" and device.type == "cpu":
        raise ValueError("fp16 on the CPU is not supported (slow and inexact there); use "
                         "dtype='fp32' (exact) or 'bf16' (fast on CPUs with AVX-512 BF16)")
    if name not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype {name} is not supported; use 'fp32', 'fp16' or 'bf16'")
    return getattr(torch, name)


def describe(device) -> str:
    """One line naming the device, e.g. 'cuda:0 (Tesla T4, sm_75, 15.6 GiB)'."""
    import torch

    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{device} ({p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB)"
    import os
    import platform

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


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (since the last reset on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
