"""The upscaler: an image in, the same kind of image out at the exact size asked for.

Image contract (the one place it is stated)
-------------------------------------------
``Upscaler.upscale(image, ...)`` takes

* a PIL image in mode RGB, RGBA, L, LA, P (converted to RGB/RGBA), CMYK, YCbCr, LAB, HSV
  (converted to RGB by PIL), ``I;16`` (16-bit gray) or ``I`` holding 16-bit values, or
* a numpy array H×W (gray), H×W×1, H×W×3 (RGB) or H×W×4 (RGBA), dtype uint8 or uint16
  (16 bits, e.g. from ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` after BGR→RGB), or
  float16/32/64 with values in [0, 1],

and returns the same kind: a PIL image in the input's mode (P becomes RGB/RGBA, CMYK and
the other colour spaces RGB), or a numpy array with the input's channel count and dtype
(floats come back as float32 in [0, 1]). 16-bit input gives 16-bit output.
Colour channels are RGB, values span the full range of the dtype. Alpha is upscaled by
the same network (as Real-ESRGAN does); gray is upscaled as RGB and converted back
with ITU-R 601 luma weights.

Internally images travel (``pegu.images.to_planes`` / ``from_planes``) as float32
tensors (C, H, W) in [0, 1]: on the CPU, or on CUDA
from one pinned upload to one pinned download, with tiles cut and blended on the GPU.
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

from ..core import compat
from ..core.device import autotuned, check_output_memory, dtype_name, resolve_dtype
from ..core.errors import BadInput, OutOfMemory
from ..core.geometry import plan_size
from ..core.images import from_planes, luma, to_planes
from ..core.registry import upscaler_spec
from ..core.settings import MIN_TILE
from .networks import is_rrdb, rrdb_in_strips
from .tiling import run_tiles


@dataclass(frozen=True)
class UpscaleResult:
    """An upscaled image and what producing it took.

    tile: largest tile edge in input pixels actually used (0 = whole image at once).
    tiles: network forward passes run (tiles × passes × (1 + alpha)).
    passes: times the network was applied (0 when only resizing down).
    batch: tiles run together in one forward (fewer than the upscaler's after an
        out-of-memory fallback).
    seconds: wall time.
    note: what was converted on the way in (a CMYK or palette image becomes RGB), or "".
    fallback: what ran out of GPU memory and what was used instead, or "" (this run only;
        the next run starts from the upscaler's own batch and tile again).
    """

    image: object
    tile: int
    tiles: int
    passes: int
    seconds: float
    note: str = ""
    batch: int = 1
    fallback: str = ""


class Upscaler:
    """A loaded upscaling network; build one with :func:`pegu.upscale.load_upscaler`."""

    def __init__(self, model, *, name: str, scale: int, device, dtype, tile: int,
                 tile_overlap: int, source: str, engine: str = "torch", batch: int = 1,
                 ncnn_net=None, unshuffle: int = 0, denoise: float | None = None,
                 descriptor=None, arch: str = "rrdb"):
        self.model = model
        self.arch = arch  # "rrdb", "srvgg", or spandrel's architecture id (e.g. "DAT")
        self._desc = descriptor  # spandrel's model descriptor, for other architectures
        self.name = name
        self.scale = scale
        self.device = device
        self.dtype = dtype
        self.tile = tile
        self.tile_overlap = tile_overlap
        self.source = source
        self.engine = engine
        self.batch = batch
        self.denoise = denoise
        self._ncnn = ncnn_net
        self._unshuffle = unshuffle  # x2plus / x1 RRDB nets pixel-unshuffle their input
        self.warmed: set = set()  # run shapes already warmed up (pegu.pipeline.warm_up)

    @property
    def dtype_name(self) -> str:
        """The dtype it runs in, as settings name it: "fp32", "fp16" or "bf16"."""
        return dtype_name(self.dtype)

    def matches(self, want) -> bool:
        """Whether this is the upscaler UpscaleSettings ``want`` names, every field: model,
        tile, tile_overlap, denoise, dtype and engine."""
        if Path(want.model).suffix:
            same = str(Path(want.model).expanduser()) == self.source
        else:
            try:
                same = upscaler_spec(want.model).name == self.name
            except BadInput:
                return False
        try:
            dtype = resolve_dtype(want.dtype, self.device)
        except BadInput:
            return False
        tile = default_tile(self.device) if want.tile is None else want.tile
        return (same and tile == self.tile and want.tile_overlap == self.tile_overlap
                and want.denoise == self.denoise and want.engine == self.engine
                and dtype == self.dtype)

    def __repr__(self) -> str:
        return (f"Upscaler({self.name!r}, x{self.scale}, device={self.device}, "
                f"dtype={self.dtype_name}, engine={self.engine!r}, tile={self.tile}, "
                f"tile_overlap={self.tile_overlap}, batch={self.batch}, "
                f"source={self.source!r})")

    def upscale(self, image, scale: float | None = None, target: tuple[int, int] | None = None,
                fit: str | None = None, progress: bool = False):
        """Upscale ``image`` (see the module docstring for accepted kinds).

        scale: output = input × scale (default: the network's own scale).
        target: exact output (width, height) in pixels; excludes ``scale``.
        fit: when ``target``'s aspect ratio differs from the image's by more than 1%:
            "cover" center-crops the input, "contain" pads the output (black, or
            transparent with alpha). Without it such a target is an error.
        Returns an image of the same kind as the input.
        """
        return self.run(image, scale=scale, target=target, fit=fit, progress=progress).image

    def run(self, image, scale: float | None = None, target: tuple[int, int] | None = None,
            fit: str | None = None, progress: bool = False) -> UpscaleResult:
        """Like :meth:`upscale`, returning an :class:`UpscaleResult` with the costs."""
        import torch

        t0 = time.perf_counter()
        planes, meta = to_planes(image)
        h, w = planes.shape[-2:]
        (tw, th), crop, inner = plan_size((w, h), scale=scale, target=target, fit=fit,
                                          default_scale=self.scale)
        check_output_memory((tw, th), self.device)
        if crop is not None:
            x0, y0, cw, ch = crop
            planes = planes[:, y0:y0 + ch, x0:x0 + cw]
            h, w = ch, cw
        factor = max(inner[0] / w, inner[1] / h)
        if self.scale == 1:  # a x1 restorer runs once; the resize does the scaling
            passes = 1
        else:
            passes = 0 if factor <= 1 else \
                math.ceil(math.log(factor) / math.log(self.scale) - 1e-9)
        # colour (3 channels) and alpha (replicated to 3) go through the network alike
        groups = [planes[:3]] + ([planes[3:4].expand(3, -1, -1)] if planes.shape[0] == 4 else [])
        plan = _Plan(self.tile, self.batch)  # this run's; out-of-memory fallbacks change it
        used, tiles = 0, 0
        with autotuned(self.device):
            for _ in range(passes):
                outs = []
                for g in groups:
                    out, edge, n = self._tiled_with_fallback(g, plan, progress)
                    outs.append(out)
                    used, tiles = max(used, edge), tiles + n
                groups = outs
        out = groups[0] if len(groups) == 1 else torch.cat([groups[0], luma(groups[1])])
        out = _resize(out, inner)
        if inner != (tw, th):
            out = _pad_center(out, (tw, th))
        result = from_planes(out.clamp_(0, 1), meta)
        return UpscaleResult(result, tile=used, tiles=tiles, passes=passes,
                             seconds=time.perf_counter() - t0, note=meta.note,
                             batch=plan.batch, fallback="; ".join(plan.fallbacks))

    # ---- tiled inference ----

    def _tiled_with_fallback(self, x, plan: "_Plan", progress: bool):
        """Run the tiles; on CUDA out-of-memory first run fewer tiles at once, then halve
        the tile limit down to MIN_TILE, then raise OutOfMemory. ``plan`` keeps what was
        used for the rest of this run. Returns (output, largest tile edge used, tiles run)."""
        import torch

        while True:
            try:
                return run_tiles(self._forward, x, device=self.device,
                                 scale=self.scale, tile=plan.tile, overlap=self.tile_overlap,
                                 batch=plan.batch, progress=progress,
                                 desc=f"{self.name} tiles")
            except torch.OutOfMemoryError as e:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if plan.batch > 1:
                    plan.fall_back("batch", plan.batch, plan.batch // 2)
                    continue
                size = min(plan.tile or math.inf, max(x.shape[-2:]))
                if size <= MIN_TILE:
                    raise OutOfMemory(
                        f"{self.name} ran out of GPU memory even with {size}px tiles; free "
                        "GPU memory (close other models) or use device='cpu'") from e
                plan.fall_back("tile", plan.tile or size, max(MIN_TILE, size // 2))

    def _forward(self, t):
        """Network on a (B, 3, h, w) batch of tiles -> (B, 3, s·h, s·w) float32 in [0, 1] on
        the device."""
        import torch
        import torch.nn.functional as F

        h, w = t.shape[-2:]
        # x2plus pixel-unshuffles its input; spandrel pads to what its architecture needs
        mod = 2 if self.scale == 2 and self._desc is None else 1
        t = t.to(self.device, non_blocking=True)
        if h % mod or w % mod:
            t = F.pad(t, (0, (-w) % mod, 0, (-h) % mod), mode="replicate")
        if self._ncnn is not None:
            if self._unshuffle:
                t = F.pixel_unshuffle(t, self._unshuffle)
            y = torch.stack([torch.from_numpy(self._ncnn(tile.numpy())) for tile in t])
        else:
            t = t.contiguous(memory_format=torch.channels_last)  # ~10% faster convolutions
            if self._desc is not None:
                net = self._desc
            elif self.device.type == "cpu" and is_rrdb(self.model):
                # on the CPU, RRDB nets run their 4x-resolution tail in strips (bounded memory)
                net = functools.partial(rrdb_in_strips, self.model)
            else:
                net = self.model
            with torch.no_grad(), compat.quiet():
                if self.device.type == "cpu" and self.dtype == torch.bfloat16:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        y = net(t)
                else:
                    y = net(t.to(self.dtype))
        y = y[:, :, : h * self.scale, : w * self.scale].float()
        # spandrel returns inference-mode tensors, which cannot be changed in place
        return y.clamp(0, 1) if self._desc is not None else y.clamp_(0, 1)


class _Plan:
    """One run's tile limit and batch, and the out-of-memory fallbacks that changed them."""

    def __init__(self, tile: int, batch: int):
        self.tile, self.batch, self.fallbacks = tile, batch, []

    def fall_back(self, what: str, old: int, new: int) -> None:
        self.fallbacks.append(f"out of GPU memory: {what} {old} -> {new}")
        setattr(self, what, new)


def default_tile(device) -> int:
    """The tile edge ``tile="auto"`` means: 512 on CUDA, 256 on the CPU."""
    return 512 if getattr(device, "type", str(device)) == "cuda" else 256


def _resize(x, size: tuple[int, int]):
    """High-quality resize of (C, H, W) to (w, h): antialiased bicubic (a no-op if equal)."""
    import torch.nn.functional as F

    if (x.shape[-1], x.shape[-2]) == size:
        return x
    return F.interpolate(x[None], size=(size[1], size[0]), mode="bicubic",
                         antialias=True, align_corners=False)[0]


def _pad_center(x, size: tuple[int, int]):
    import torch.nn.functional as F

    w, h = size
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), value=0.0)
