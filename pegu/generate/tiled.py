"""The tiled refine's UNet: every denoising step runs on overlapping latent tiles of the
model's native size and the predictions are averaged where tiles overlap (MultiDiffusion,
Bar-Tal et al. 2023); a tile ControlNet runs per tile with the tile's part of the image
(Ultimate SD Upscale's way)."""
from __future__ import annotations

import contextlib

from ..core.geometry import axis_tiles


@contextlib.contextmanager
def tiled_unet(unet, tile: int, batch: int = 1, controlnet=None):
    """Within the block ``unet`` runs on overlapping ``tile``² latent tiles, ``batch`` tiles
    per call, and the calls of ``controlnet`` (if any) are put off and run per tile; both
    get their own forwards back afterwards (an offload hook's included)."""
    own = unet.__dict__.get("forward")  # accelerate's offload hook, if any
    own_net = None if controlnet is None else controlnet.__dict__.get("forward")
    control_forward = None
    if controlnet is not None:
        control_forward = controlnet.forward
        controlnet.forward = ControlCall
    unet.forward = tiled_forward(unet.forward, tile, batch=batch, control=control_forward)
    try:
        yield
    finally:
        restore_forward(unet, own)
        if controlnet is not None:
            restore_forward(controlnet, own_net)


class ControlCall:
    """A ControlNet forward put off: under the tiled refine the pipeline's ControlNet call
    returns this (as both its residual outputs), and the tiled UNet forward runs the real
    ControlNet on each tile with the tile's part of the control image."""

    def __init__(self, sample, timestep, encoder_hidden_states=None, controlnet_cond=None,
                 conditioning_scale=1.0, guess_mode=False, return_dict=True, **kwargs):
        self.encoder_hidden_states = encoder_hidden_states
        self.cond = controlnet_cond
        self.kwargs = dict(kwargs, conditioning_scale=conditioning_scale, guess_mode=guess_mode)

    def __iter__(self):  # unpacked as (down residuals, mid residual)
        return iter((self, self))


def restore_forward(module, own) -> None:
    """``module.forward`` back to what it was (its class's, or an offload hook's)."""
    if own is None:
        module.__dict__.pop("forward", None)
    else:
        module.forward = own


def _repeat(value, reps: int):
    """A per-sample tensor (or dict of them) repeated for ``reps`` tiles along the batch."""
    if isinstance(value, dict):
        return {k: _repeat(v, reps) for k, v in value.items()}
    return value.repeat(reps, *[1] * (value.ndim - 1))


def tiled_forward(forward, tile: int, batch: int = 1, overlap: int | None = None,
                   control=None):
    """A UNet forward that runs ``forward`` on overlapping ``tile``² latent tiles (``batch``
    tiles per call) and averages the predictions where tiles overlap (MultiDiffusion). A
    latent no larger than one tile goes through ``forward`` unchanged. ``control``: the real
    forward of a ControlNet whose calls were put off (:class:`ControlCall`), run per tile."""
    import torch

    overlap = tile // 4 if overlap is None else overlap

    def run(sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        h, w = sample.shape[-2:]
        call = kwargs.get("down_block_additional_residuals")
        if isinstance(call, ControlCall):  # run per tile below
            del kwargs["down_block_additional_residuals"], kwargs["mid_block_additional_residual"]
        elif h <= tile and w <= tile:
            return forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
        kwargs.pop("return_dict", None)
        cond = kwargs.pop("added_cond_kwargs", None)
        spans = [(y, x) for y in axis_tiles(h, tile, overlap) for x in axis_tiles(w, tile, overlap)]
        out = torch.zeros_like(sample)
        count = torch.zeros_like(sample[:1, :1])
        n = sample.shape[0]
        for k in range(0, len(spans), batch):
            group = spans[k:k + batch]
            x = torch.cat([sample[:, :, y0:y1, x0:x1] for (y0, y1), (x0, x1) in group])
            reps = len(group)
            extra = {}
            if cond is not None:
                extra["added_cond_kwargs"] = _repeat(cond, reps)
            t = timestep.repeat(reps) if torch.is_tensor(timestep) and timestep.ndim else timestep
            ehs = encoder_hidden_states.repeat(reps, 1, 1)
            if isinstance(call, ControlCall):
                f = call.cond.shape[-1] // w  # the control image is in pixels
                image = torch.cat([call.cond[:, :, f * y0:f * y1, f * x0:f * x1]
                                   for (y0, y1), (x0, x1) in group])
                kw = dict(call.kwargs)
                if kw.get("added_cond_kwargs") is not None:
                    kw["added_cond_kwargs"] = _repeat(kw["added_cond_kwargs"], reps)
                down, mid = control(x, t, call.encoder_hidden_states.repeat(reps, 1, 1),
                                    controlnet_cond=image, return_dict=False, **kw)
                extra.update(down_block_additional_residuals=down,
                             mid_block_additional_residual=mid)
            pred = forward(x, t, ehs, *args, return_dict=False, **extra, **kwargs)[0]
            for i, ((y0, y1), (x0, x1)) in enumerate(group):
                out[:, :, y0:y1, x0:x1] += pred[i * n:(i + 1) * n]
                count[:, :, y0:y1, x0:x1] += 1
        return (out / count,)

    return run
