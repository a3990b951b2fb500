"""Tiled inference with invisible seams: tiles spread evenly, overlapping, each seeing some
context beyond its edges, blended with feathered weights where they overlap."""
from __future__ import annotations

from ..core.geometry import axis_tiles


def run_tiles(forward, x, *, device, scale: int, tile: int, overlap: int, batch: int,
              progress: bool = False, desc: str = "tiles"):
    """``forward`` (a (B, 3, h, w) batch -> (B, 3, s·h, s·w) in [0, 1] on ``device``) over
    one (3, H, W) plane group ``x`` in tiles of at most ``tile`` px -> ((3, sH, sW) float32 on the CPU,
    largest tile edge used (0: untiled), tiles run).

    Tiles of at most ``tile`` px, evenly spread, overlap by ``overlap`` px and see
    ``overlap`` px of context beyond their edges. Each seam lies in the middle of an overlap,
    feathered over ``overlap / 2`` px, so it does not show. Tiles of the same shape run
    ``batch`` at a time. On CUDA the planes stay on the GPU and cross the bus once each way,
    through pinned memory.
    """
    import torch
    from tqdm.auto import tqdm

    s = scale
    _, h, w = x.shape
    if device.type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)
    if not tile or (h <= tile and w <= tile):
        return to_cpu(forward(x[None])[0]), 0, 1
    overlap = min(overlap, tile // 2)
    ys, xs = axis_tiles(h, tile, overlap), axis_tiles(w, tile, overlap)
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
    bar = tqdm(total=len(ys) * len(xs), desc=desc, unit="tile", disable=not progress,
               leave=False)
    for jobs in groups.values():
        for k in range(0, len(jobs), batch):
            chunk = jobs[k:k + batch]
            outs = forward(torch.stack([x[:, a:b, c:d] for _, _, (a, b, c, d) in chunk]))
            for out, (i, j, (py0, _, px0, _)) in zip(outs, chunk):
                (y0, y1), (x0, x1) = ys[i], xs[j]
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out = out[:, oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
                wt = ry[i][:, None] * rx[j][None, :]
                acc[:, y0 * s:y1 * s, x0 * s:x1 * s].addcmul_(out, wt)
            bar.update(len(chunk))
    bar.close()
    used = max(b - a for a, b in ys + xs)
    return to_cpu(acc.div_(wy[:, None]).div_(wx[None, :])), used, len(ys) * len(xs)


def to_cpu(t):
    """A device tensor copied to the CPU (through pinned memory from CUDA)."""
    import torch

    if t.device.type != "cuda":
        return t
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    torch.cuda.synchronize(t.device)
    return out


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
