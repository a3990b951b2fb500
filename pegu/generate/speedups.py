"""Cheaper UNet steps, each on for one pipeline call and undone after it: DeepCache (step
caching), ToMe (token merging, through the tomesd package) and a torch.compile'd UNet."""
from __future__ import annotations

import contextlib

from ..core.device import compiled
from .tiled import restore_forward


class DeepCache:
    """DeepCache (Ma, Fang & Wang, CVPR 2024, arXiv:2312.00858), its uniform 1:N strategy.

    The UNet runs whole every ``interval``-th step. In the steps between, only the skip
    branch through down block ``branch`` (0: the shallowest) and the up blocks it feeds run;
    the deeper down blocks, the mid block and the deeper up blocks give the outputs they gave
    at the last whole step (high-level features change slowly between adjacent steps).

    Steps are counted from the calls (a new timestep starts a step), and each call within a
    step has its own cache: pegu's tiled refine calls the UNet once per latent tile, and
    each tile must reuse its own features. (The DeepCache package's helper numbers steps by
    their index in ``scheduler.timesteps`` and keeps one cache, so tiles would share it.)
    ``full_calls`` / ``partial_calls`` count the two kinds of call.
    """

    def __init__(self, unet, interval: int, branch: int = 0):
        n = len(unet.down_blocks)
        self.branch = min(branch, n - 1)
        mid = [unet.mid_block] if unet.mid_block is not None else []
        self.deep = [*unet.down_blocks[self.branch + 1:], *mid,
                     *unet.up_blocks[:n - 1 - self.branch]]
        self.unet, self.interval = unet, interval
        self.full_calls = self.partial_calls = 0
        self._step, self._t, self._call = -1, None, 0
        self._caches: dict[int, dict] = {}  # call within a step -> {module index: output}
        self._mode, self._slot = "off", {}

    def __enter__(self):
        forward = self.unet.forward

        def unet_forward(sample, timestep, *args, **kwargs):
            t = float(timestep.flatten()[0]) if hasattr(timestep, "flatten") else float(timestep)
            if t != self._t:
                self._t, self._step, self._call = t, self._step + 1, 0
            else:
                self._call += 1
            slot = self._caches.setdefault(self._call, {})
            whole = self._step % self.interval == 0 or slot.get("shape") != tuple(sample.shape)
            self._mode, self._slot = ("full" if whole else "partial"), slot
            if whole:
                slot["shape"] = tuple(sample.shape)
                self.full_calls += 1
            else:
                self.partial_calls += 1
            try:
                return forward(sample, timestep, *args, **kwargs)
            finally:
                self._mode = "off"

        # a forward set on the instance (accelerate's offload hooks) is put back after
        self._saved = [(m, m.__dict__.get("forward")) for m in (self.unet, *self.deep)]
        self.unet.forward = unet_forward
        for i, module in enumerate(self.deep):
            module.forward = self._cached(i, module.forward)
        return self

    def _cached(self, i: int, forward):
        def run(*args, **kwargs):
            if self._mode == "partial":
                return self._slot[i]
            out = forward(*args, **kwargs)
            if self._mode == "full":
                self._slot[i] = out
            return out
        return run

    def __exit__(self, *exc):
        for module, before in self._saved:
            restore_forward(module, before)
        self._caches.clear()


def attention_downsample(unet) -> int:
    """How much smaller than the latent the highest-resolution attention layers work
    (SD 1.5: 1; SDXL, whose first down block has no attention: 2)."""
    for i, block in enumerate(unet.down_blocks):
        if getattr(block, "attentions", None):
            return 2 ** i
    return 1


@contextlib.contextmanager
def merged_tokens(unet, ratio: float, seed: int, device):
    """ToMe for SD (Bolya & Hoffman 2023, arXiv:2303.17604) through tomesd: ``ratio`` of the
    tokens merged before the highest-resolution attention layers and unmerged after them.
    Its random partition is drawn from a generator seeded with ``seed``, so a run repeats."""
    import tomesd
    import torch

    tomesd.apply_patch(unet, ratio=ratio, max_downsample=attention_downsample(unet))
    unet._tome_info["args"]["generator"] = torch.Generator(device=device).manual_seed(seed)
    own, forward = unet.__dict__.get("forward"), unet.forward

    def sized(sample, *args, **kwargs):  # each call's latent size: a tile's, when tiled
        unet._tome_info["size"] = (sample.shape[2], sample.shape[3])
        return forward(sample, *args, **kwargs)

    unet.forward = sized
    try:
        yield
    finally:
        restore_forward(unet, own)
        tomesd.remove_patch(unet)


@contextlib.contextmanager
def faster_unet(pipe, s, *, seed: int, device, compiled_cache: dict):
    """``pipe``'s UNet with the speed-ups settings ``s`` ask for, for one call; yields the
    DeepCache (None when off) so that its call counts can be read."""
    with contextlib.ExitStack() as stack:
        unet = pipe.unet
        cache = stack.enter_context(DeepCache(unet, s.deepcache, s.deepcache_branch)) \
            if s.deepcache else None
        if s.tome:
            stack.enter_context(merged_tokens(unet, s.tome, seed, device))
        if s.compile:
            key = (id(unet), s.compile)
            if key not in compiled_cache:
                compiled_cache[key] = compiled(unet, device, s.compile, refuse=True)
            pipe.unet = compiled_cache[key]
            stack.callback(setattr, pipe, "unet", unet)
        yield cache
