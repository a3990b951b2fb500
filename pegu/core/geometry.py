"""Sizes and tiles: the arithmetic of output plans and of tiling, shared by the upscaler
(image tiles) and the tiled refine (latent tiles)."""
from __future__ import annotations

import math

from .errors import BadInput
from .settings import MAX_SIDE, check_fit

ASPECT_TOLERANCE = 0.01  # aspect ratios closer than 1% count as the same


def axis_tiles(n: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Spans along one axis: as few as tiles of at most ``tile`` px allow, each as short as
    that count allows, evenly spread so that neighbours overlap by ``overlap`` px."""
    if n <= tile:
        return [(0, n)]
    count = math.ceil((n - overlap) / (tile - overlap))
    size = min(tile, math.ceil((n + (count - 1) * overlap) / count))
    return [(a, a + size) for a in (round(i * (n - size) / (count - 1)) for i in range(count))]


def plan_size(size: tuple[int, int], *, scale=None, target=None, fit=None,
              default_scale: int = 4):
    """Output plan for an input of ``size`` (w, h).

    Returns (target (w, h), crop box (x, y, w, h) of the input or None, inner (w, h)): the
    network output is resized to ``inner`` and, for fit="contain", padded to ``target``.
    """
    w, h = size
    check_fit(fit)
    if scale is not None and target is not None:
        raise BadInput("give either scale or target, not both")
    if target is None:
        scale = default_scale if scale is None else scale
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise BadInput(f"scale must be a positive number, got {scale!r}")
        target = (max(1, round(w * scale)), max(1, round(h * scale)))
        if max(target) > MAX_SIDE:
            raise BadInput(f"scale {scale:g} makes {target[0]}x{target[1]}; each side must "
                             f"be at most {MAX_SIDE} pixels")
        return target, None, target
    try:
        tw, th = (int(v) for v in target)
    except (TypeError, ValueError):
        raise BadInput(f"target must be (width, height), got {target!r}") from None
    if tw <= 0 or th <= 0:
        raise BadInput(f"target must be positive, got {tw}x{th}; e.g. target=(2048, 2048)")
    if max(tw, th) > MAX_SIDE:  # checked before any work: 16384² RGB is 0.8 GB already
        raise BadInput(f"target {tw}x{th}: each side must be at most {MAX_SIDE} pixels")
    mismatch = abs((tw / th) / (w / h) - 1)
    if mismatch <= ASPECT_TOLERANCE:
        return (tw, th), None, (tw, th)
    if fit is None:
        raise BadInput(
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
