"""The memory policy: how much of a pipeline stays on the GPU, chosen per image size."""
from __future__ import annotations

MEMORY_LEVELS = ("none", "vae-tiling", "model-offload", "sequential-offload")
GIB = 2**30
# fp16 weights (UNet + text encoders + VAE) and a rough activation cost per megapixel per
# image (SDPA attention, classifier-free guidance doubles the batch); used by "auto".
_WEIGHTS_GIB = {"sd15": 2.0, "sdxl": 6.9}
_LARGEST_GIB = {"sd15": 1.7, "sdxl": 5.1}
_ACT_GIB_PER_MP = {"sd15": 1.0, "sdxl": 1.5}


def choose_memory(family: str, width: int, height: int, batch: int, device_type: str,
                  total_bytes: int | None) -> str:
    """The lightest memory level that fits: "none" (all on the GPU), "vae-tiling" (also
    decode large images in tiles), "model-offload" (one component on the GPU at a time),
    "sequential-offload" (layer by layer, slowest); on the CPU "cpu", or "vae-tiling" above
    1024² (RAM is bounded too)."""
    if device_type != "cuda":
        return "vae-tiling" if width * height > 1024 * 1024 else "cpu"
    budget = 0.9 * (total_bytes or 0) / GIB
    mp = width * height / 2**20 * batch
    act = _ACT_GIB_PER_MP[family] * mp
    if _WEIGHTS_GIB[family] + act <= budget:
        return "vae-tiling" if width * height > 1024 * 1024 else "none"
    if _LARGEST_GIB[family] + act <= budget:
        return "model-offload"
    return "sequential-offload"


PLACEMENTS = ("unset", "cpu", "none", "model-offload", "sequential-offload")  # rising


def level_for(request: str, family: str, width: int, height: int, batch: int,
              device) -> str:
    """The memory level a call of this size runs at: ``request`` itself, or for "auto"
    :func:`choose_memory` on this device's memory."""
    if request != "auto":
        return request
    import torch

    total = (torch.cuda.get_device_properties(device).total_memory
             if device.type == "cuda" else None)
    return choose_memory(family, width, height, batch, device.type, total)


def label(level: str, placement: str, device) -> str:
    """What a call records as its memory level: the placement when an earlier call raised
    it above this call's level, else the level."""
    place = _place(level, device.type)
    return placement if PLACEMENTS.index(placement) > PLACEMENTS.index(place) else level


def _place(level: str, device_type) -> str:
    return level if level in PLACEMENTS else ("cpu" if device_type == "cpu" else "none")


def apply(pipe, device, level: str, batch: int, placement: str) -> str:
    """Set ``pipe`` up for one call at memory ``level``; returns the placement now.

    VAE tiling (above 1024² or under offload) and VAE slicing (batches, under the same)
    change the decoded pixels slightly: they are set per call, from its size alone, so the
    same settings give the same image whatever ran before. Placement (offload) only ever
    rises: moving models back costs time, and offload does not change the pixels. No
    attention slicing: PyTorch's fused attention (SDPA) already bounds attention memory,
    and diffusers advises against slicing on top of it."""
    place = _place(level, device.type)
    if PLACEMENTS.index(place) > PLACEMENTS.index(placement):
        if place in ("cpu", "none"):
            pipe.to(device)
        elif place == "model-offload":
            pipe.to("cpu")
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to("cpu")
            pipe.enable_sequential_cpu_offload(device=device)
        placement = place
    tiled = level in ("vae-tiling", "model-offload", "sequential-offload")
    if tiled:
        pipe.vae.enable_tiling()
    else:
        pipe.vae.disable_tiling()
    if tiled and batch > 1:
        pipe.vae.enable_slicing()
    else:
        pipe.vae.disable_slicing()
    return placement
