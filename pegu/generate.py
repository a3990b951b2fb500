"""The generator stage: a diffusers text-to-image pipeline with a memory policy.

``load_generator(name)`` -> ``Generator``; ``Generator.generate(GenerateSettings)`` ->
``GenerateResult`` (the images plus every choice actually made).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .registry import GeneratorSpec, generator_spec
from .settings import GenerateSettings, check_control_weight, check_scheduler
from .weights import cache_dir, offline_mode

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


# A1111 sampler -> diffusers scheduler class and options. Sources: diffusers' scheduler
# overview table (docs/source/en/api/schedulers/overview.md), except "DPM++ SDE", which is
# k-diffusion's sample_dpmpp_sde (A1111 modules/sd_samplers_kdiffusion.py) and whose diffusers
# port is DPMSolverSDEScheduler (the table's DPMSolverSinglestepScheduler is DPM++ 2S), and
# UniPC, built with A1111's order 3 and lower order final (modules/shared_options.py) but
# variant bh2: A1111's default bh1 gives NaN latents in diffusers' UniPC (tested), so pegu's
# UniPC matches A1111 with "UniPC variant: bh2".
SAMPLERS = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", dict(use_karras_sigmas=True)),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++")),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler",
                            dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True)),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", dict(use_karras_sigmas=True)),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", dict(use_karras_sigmas=True)),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", dict(use_karras_sigmas=True)),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", dict(use_karras_sigmas=True)),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler",
              dict(solver_type="bh2", solver_order=3, lower_order_final=True)),
}


def make_scheduler(name: str, config, seed: int | None = None):
    """A diffusers scheduler for an A1111 sampler name (see ``SAMPLERS`` and its sources).
    seed: the Brownian-tree noise of the SDE samplers (DPM++ SDE), so they repeat too."""
    import diffusers as d

    cls, kwargs = SAMPLERS[check_scheduler(name)]
    scheduler_cls = getattr(d, cls)
    # every schedule option stated: a model's or an earlier sampler's config never leaks in
    accepted = scheduler_cls._get_init_keys(scheduler_cls)
    stated = {k: v for k, v in dict(use_karras_sigmas=False, use_exponential_sigmas=False,
                                    use_beta_sigmas=False, algorithm_type="dpmsolver++",
                                    noise_sampler_seed=seed).items() if k in accepted}
    return scheduler_cls.from_config(config, **{**stated, **kwargs})


@dataclass(frozen=True)
class GenerateResult:
    """Images and what producing them used.

    settings: the settings with every default resolved (what to store and re-run).
    seeds: each image's seed. dtype, memory, device: what ran. vae_fp32_fallback: the fp16
    VAE produced NaNs and the latents were decoded again in fp32. seconds: wall time.
    warnings: what the user should know (e.g. the part of a long prompt CLIP dropped).
    embeddings: the textual-inversion embeddings the prompts used, {name: short hash}.
    loras: the LoRAs the prompt's ``<lora:name:weight>`` tags activated, {name: weight}.
    """

    images: list
    settings: GenerateSettings
    model: str
    seeds: list[int]
    dtype: str
    memory: str
    device: str
    vae_fp32_fallback: bool
    seconds: float
    warnings: tuple[str, ...] = ()
    embeddings: dict = field(default_factory=dict)  # textual inversions used: {name: hash}
    loras: dict = field(default_factory=dict)  # LoRAs active: {name: weight}

    @property
    def image(self):
        return self.images[0]


@dataclass(frozen=True)
class RefineResult:
    """An img2img refine: the image, whether the fp16 VAE needed the fp32 fallback, and the
    tile ControlNet that conditioned it (registry name or where it came from; None: none)."""

    image: object
    vae_fp32_fallback: bool
    controlnet: str | None = None
    controlnet_source: str | None = None


class Generator:
    """A loaded text-to-image pipeline; build one with :func:`load_generator`."""

    def __init__(self, pipe, *, name: str, family: str, native: int, spec: GeneratorSpec | None,
                 device, dtype, memory: str, scheduler: str, source: str,
                 offline: bool = False):
        self.pipe = pipe
        self.name = name
        self.family = family
        self.native = native
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.memory_request = memory
        self.memory = "unset"
        self._placement = "unset"
        self.scheduler = scheduler
        self.source = source
        self.offline = offline
        self._controlnets: dict = {}  # name -> (ControlNetModel, spec or None, source)
        self._control_pipes: dict = {}  # id(ControlNetModel) -> its img2img pipeline
        self._scheduler_config = pipe.scheduler.config  # the model's own, never a previous call's
        self.last_embeddings: dict = {}
        self.last_loras: dict = {}
        self.warmed: set = set()  # run shapes already warmed up (pegu.pipeline.warm_up)

    def __repr__(self) -> str:
        return (f"Generator({self.name!r}, {self.family}, native {self.native}², "
                f"device={self.device}, dtype={str(self.dtype).removeprefix('torch.')}, "
                f"memory={self.memory}, scheduler={self.scheduler!r})")

    def resolve(self, settings: GenerateSettings) -> GenerateSettings:
        """``settings`` with each ``None`` replaced by this model's recommendation."""
        spec = self.spec
        return replace(
            settings,
            negative_prompt=settings.negative_prompt if settings.negative_prompt is not None
            else (spec.negative if spec else ""),
            width=settings.width or self.native, height=settings.height or self.native,
            steps=settings.steps or (spec.steps if spec else 25),
            guidance=settings.guidance if settings.guidance is not None
            else (spec.guidance if spec else 7.0),
            scheduler=settings.scheduler or self.scheduler)

    def generate(self, settings: GenerateSettings, progress: bool = True) -> GenerateResult:
        """Generate ``settings.batch_size`` images; image i uses a CPU ``torch.Generator``
        seeded with ``settings.seed + i``, so the same settings give the same images."""
        import torch

        t0 = time.perf_counter()
        s = self.resolve(settings)
        conditioning, notes = self._conditioning(s)
        for n in notes:
            warnings.warn(n, stacklevel=2)
        self._apply_memory(s.width, s.height, s.batch_size)
        images, fallback = self._call(
            self.pipe, s.scheduler, progress, **conditioning, width=s.width, height=s.height,
            num_inference_steps=s.steps, guidance_scale=s.guidance,
            num_images_per_prompt=s.batch_size,
            generator=[torch.Generator("cpu").manual_seed(x) for x in s.seeds])
        if fallback:
            notes.append("the fp16 VAE overflowed (NaN); decoded again in fp32")
        a1111 = s.prompt_syntax == "a1111"
        return GenerateResult(embeddings=dict(self.last_embeddings) if a1111 else {},
                              loras=dict(self.last_loras) if a1111 else {},
            images=images, settings=s, model=self.name, seeds=s.seeds,
            dtype=str(self.dtype).removeprefix("torch."), memory=self.memory,
            device=str(self.device), vae_fp32_fallback=fallback,
            seconds=time.perf_counter() - t0, warnings=tuple(notes))

    def refine(self, image, settings: GenerateSettings, strength: float,
               steps: int | None = None, progress: bool = True, tiled: bool = False,
               control: float | None = None, controlnet: str | None = None) -> RefineResult:
        """img2img over ``image`` at its own size (A1111's hires-fix second pass).

        strength: how much to change, 0 < strength < 1 (0.2–0.4 keeps the composition).
        steps: denoising steps actually run (default: the settings' steps).
        tiled: every denoising step runs the UNet on overlapping latent tiles of the model's
            native size and averages their noise predictions where they overlap
            (MultiDiffusion, Bar-Tal et al. 2023): UNet memory is bounded by the tile, and
            the overlaps agree at every step, so no seam forms. One tile covering the image
            is exactly the untiled refine.
        control: the weight (conditioning scale) of a tile ControlNet conditioned on
            ``image`` itself, which holds the structure so that higher strengths (0.4–0.7)
            add detail without new subjects; None: no ControlNet. Tiled, it runs on each
            tile with the tile's part of the image (Ultimate SD Upscale's way).
        controlnet: which (a registry name, Hub id or folder; default: the tile ControlNet
            of this model's family, see ``registry.CONTROLNETS``).
        """
        import math

        import torch

        s = self.resolve(settings)
        w, h = image.size
        if w % 8 or h % 8:
            raise ValueError(f"refine needs a size in multiples of 8, got {w}x{h}")
        if control is not None:
            check_control_weight("control", control)
        self._apply_memory(w, h, 1)
        net = self._controlnet(controlnet) if control is not None else None
        pipe = self._img2img_pipe(net)
        run = steps or s.steps
        conditioning, _ = self._conditioning(s)
        extra = {} if net is None else dict(control_image=image,
                                            controlnet_conditioning_scale=float(control))
        unet = pipe.unet
        own = unet.__dict__.get("forward")  # accelerate's offload hook, if any
        own_net = None if net is None else net[0].__dict__.get("forward")
        if tiled:
            control_forward = None
            if net is not None:
                control_forward = net[0].forward
                net[0].forward = _ControlCall
            unet.forward = _tiled_forward(unet.forward, self.native // 8,
                                          batch=4 if self.device.type == "cuda" else 1,
                                          control=control_forward)
        try:
            images, fallback = self._call(
                pipe, s.scheduler, progress, **conditioning, image=image, **extra,
                strength=strength, num_inference_steps=max(run, math.ceil(run / strength)),
                guidance_scale=s.guidance, generator=torch.Generator("cpu").manual_seed(s.seed))
        finally:
            if tiled:  # back to the forwards they had
                _restore_forward(unet, own)
                if net is not None:
                    _restore_forward(net[0], own_net)
        if net is None:
            return RefineResult(images[0], fallback)
        return RefineResult(images[0], fallback, net[1].name if net[1] else net[2], net[2])

    def _img2img_pipe(self, net):
        """diffusers' img2img pipeline sharing this pipeline's components; with ``net`` (a
        loaded ControlNet) its ControlNet img2img pipeline."""
        from diffusers import AutoPipelineForImage2Image

        if net is None:
            if getattr(self, "_img2img", None) is None:
                self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            return self._img2img
        key = id(net[0])
        if key not in self._control_pipes:
            self._control_pipes[key] = AutoPipelineForImage2Image.from_pipe(
                self.pipe, controlnet=net[0])
        return self._control_pipes[key]

    def _controlnet(self, name: str | None):
        """(ControlNetModel, registry spec or None, source) for ``name``, loaded once and
        placed as the pipeline is (on the device, or offloaded layer by layer)."""
        from .registry import controlnet_spec

        spec = controlnet_spec(name, self.family, tiny=bool(self.spec and self.spec.tiny))
        key = spec.name if spec else str(name)
        if key not in self._controlnets:
            model, source = load_controlnet(spec or str(name), self.dtype, self.offline)
            if self._placement == "sequential-offload":
                from accelerate import cpu_offload

                cpu_offload(model, execution_device=self.device)
            else:
                model.to(self.device)
            self._controlnets[key] = (model, spec, source)
        return self._controlnets[key]

    def _call(self, pipe, scheduler: str, progress: bool, **kwargs):
        """Run ``pipe`` with ``scheduler``; (PIL images, fp32-VAE fallback used)."""
        pipe.scheduler = make_scheduler(scheduler, self._scheduler_config,
                                        seed=_seed_of(kwargs["generator"]))
        pipe.set_progress_bar_config(disable=not progress)
        final = {}

        def keep_latents(p, step, timestep, kw):
            final["latents"] = kw["latents"]
            return kw

        images = pipe(output_type="np", callback_on_step_end=keep_latents, **kwargs).images
        fallback = bool(np.isnan(images).any())
        if fallback:
            images = self._decode_fp32(final["latents"])
        return pipe.numpy_to_pil(images), fallback

    def _conditioning(self, s: GenerateSettings) -> tuple[dict, list[str]]:
        """The pipeline's text keywords for ``s`` and the warnings about them: embeddings
        built A1111's way (pegu.prompts), or the plain text that diffusers cuts at 77."""
        if s.prompt_syntax == "plain":
            from .prompts import apply_loras

            self.last_loras, self.last_embeddings = apply_loras(self.pipe, []), {}  # all off
            notes = [n for n in (self._prompt_note("prompt", s.prompt),
                                 self._prompt_note("negative prompt", s.negative_prompt)) if n]
            return dict(prompt=s.prompt, negative_prompt=s.negative_prompt or None), notes
        from .prompts import (apply_loras, embeddings, extra_networks, file_hash,
                              load_embeddings, lora_tags)

        # A1111 activates the LoRA tags of the prompt and removes every tag from both texts
        self.last_loras = apply_loras(self.pipe, lora_tags(s.prompt))
        prompt, negative = (extra_networks(t or "")[0] for t in (s.prompt, s.negative_prompt))
        used = load_embeddings(self.pipe, (prompt, negative))
        self.last_embeddings = {name: file_hash(path) for name, path in used}
        return embeddings(self.pipe, prompt, negative), []

    def _prompt_note(self, what: str, text: str) -> str | None:
        """A warning naming the words CLIP will not read (it reads 77 tokens)."""
        tok = self.pipe.tokenizer
        if not text:
            return None
        ids = tok(text, truncation=False, add_special_tokens=True).input_ids
        limit = tok.model_max_length
        if len(ids) <= limit:
            return None
        dropped = tok.decode(ids[limit - 1:-1], skip_special_tokens=True)
        return (f"the {what} is {len(ids)} tokens but CLIP reads {limit}; this part is "
                f"dropped: {dropped!r}. Shorten it or move what matters to the front.")

    def _decode_fp32(self, latents):
        """Decode ``latents`` with the VAE in fp32; raise if that also gives NaNs."""
        import torch

        vae = self.pipe.vae
        dtype = vae.dtype
        try:
            vae.to(torch.float32)
            z = latents.to(vae.device, torch.float32) / vae.config.scaling_factor
            with torch.no_grad():
                image = vae.decode(z, return_dict=False)[0]
            image = self.pipe.image_processor.postprocess(image, output_type="np")
        finally:
            vae.to(dtype)
        if np.isnan(image).any():
            raise FloatingPointError(
                f"{self.name} produced NaN latents (not only the VAE); try dtype='fp32', "
                "another scheduler, or fewer steps")
        return image

    def _apply_memory(self, width: int, height: int, batch: int) -> None:
        """This call's memory measures, chosen from its size alone so that the same settings
        give the same image whatever ran before. VAE tiling (above 1024² or under offload)
        and VAE slicing (batches, under the same) change the decoded pixels slightly: they
        are set per call. Placement (offload) only ever rises: moving models back costs
        time, and offload does not change the pixels. No attention slicing: PyTorch's fused
        attention (SDPA) already bounds attention memory, and diffusers advises against
        slicing on top of it."""
        import torch

        if self.memory_request == "auto":
            total = (torch.cuda.get_device_properties(self.device).total_memory
                     if self.device.type == "cuda" else None)
            level = choose_memory(self.family, width, height, batch, self.device.type, total)
        else:
            level = self.memory_request
        order = ("unset", "cpu", "none", "model-offload", "sequential-offload")
        place = level if level in order else ("cpu" if self.device.type == "cpu" else "none")
        pipe = self.pipe
        if order.index(place) > order.index(self._placement):
            if place in ("cpu", "none"):
                pipe.to(self.device)
            elif place == "model-offload":
                pipe.to("cpu")
                pipe.enable_model_cpu_offload(device=self.device)
            else:
                pipe.to("cpu")
                pipe.enable_sequential_cpu_offload(device=self.device)
            self._placement = place
        tiled = level in ("vae-tiling", "model-offload", "sequential-offload")
        if tiled:
            pipe.vae.enable_tiling()
        else:
            pipe.vae.disable_tiling()
        if tiled and batch > 1:
            pipe.vae.enable_slicing()
        else:
            pipe.vae.disable_slicing()
        self.memory = self._placement if order.index(self._placement) > order.index(place) \
            else level


class _ControlCall:
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


def _restore_forward(module, own) -> None:
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


def _tiled_forward(forward, tile: int, batch: int = 1, overlap: int | None = None,
                   control=None):
    """A UNet forward that runs ``forward`` on overlapping ``tile``² latent tiles (``batch``
    tiles per call) and averages the predictions where tiles overlap (MultiDiffusion). A
    latent no larger than one tile goes through ``forward`` unchanged. ``control``: the real
    forward of a ControlNet whose calls were put off (:class:`_ControlCall`), run per tile."""
    import torch

    from .upscale import _axis_tiles

    overlap = tile // 4 if overlap is None else overlap

    def run(sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        h, w = sample.shape[-2:]
        call = kwargs.get("down_block_additional_residuals")
        if isinstance(call, _ControlCall):  # run per tile below
            del kwargs["down_block_additional_residuals"], kwargs["mid_block_additional_residual"]
        elif h <= tile and w <= tile:
            return forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
        kwargs.pop("return_dict", None)
        cond = kwargs.pop("added_cond_kwargs", None)
        spans = [(y, x) for y in _axis_tiles(h, tile, overlap) for x in _axis_tiles(w, tile, overlap)]
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
            if isinstance(call, _ControlCall):
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


def _seed_of(generator) -> int:
    """The seed of the first CPU ``torch.Generator`` of a call."""
    first = generator[0] if isinstance(generator, list) else generator
    return int(first.initial_seed())


# ---- loading ----

def load_generator(name_or_path: str | Path = "tiny-sd15", *, device="auto", dtype="auto",
                   memory: str = "auto", scheduler: str | None = None, vae: str | None = None,
                   config: str | Path | None = None, revision: str | None = None,
                   offline: bool | None = None) -> Generator:
    """Load a text-to-image model.

    name_or_path: a registry name (``pegu models``; e.g. "realistic-vision-v6", "sdxl-base",
        "tiny-sd15"), a Hugging Face Hub id, a diffusers folder, or a single
        ``.safetensors``/``.ckpt`` checkpoint (give ``config=`` a diffusers folder of the same
        family to load it offline). On Kaggle, registry models attached under
        ``/kaggle/input`` are found by name.
    device: "auto" (CUDA if available), "cpu", "cuda", ... dtype: "auto" (fp16 on CUDA, fp32
        on the CPU), "fp32", "fp16", "bf16".
    memory: "auto" (chosen per image size from the GPU's memory; see ``choose_memory``) or one
        of MEMORY_LEVELS. scheduler: default sampler name (settings can override it).
    vae: a Hub id or folder of a VAE to use instead of the model's (default: the registry's
        recommendation, e.g. sd-vae-ft-mse for Realistic Vision, the fp16-fix VAE for SDXL).
    revision: Hub revision (branch, tag or commit). offline: never use the network
        (default: ``$PEGU_OFFLINE``/``$HF_HUB_OFFLINE``).
    """
    from . import _compat
    from .device import check_gpu, resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    check_gpu(dev, dt)
    if memory != "auto" and memory not in MEMORY_LEVELS + ("cpu",):
        raise ValueError(f"memory must be 'auto' or one of {', '.join(MEMORY_LEVELS)}, "
                         f"got {memory!r}")
    if dev.type == "cpu" and memory not in ("auto", "cpu"):
        raise ValueError(f"memory={memory!r} is for GPUs; on the CPU use 'auto'")
    if scheduler is not None:
        scheduler = check_scheduler(scheduler)
    offline = offline_mode() if offline is None else offline
    name = str(name_or_path)
    spec = _registered(name)
    vae = vae if vae is not None else (spec.vae if spec else None)
    # the replacement VAE is loaded first and passed in: the model's own is never fetched
    extra = {"vae": _load_vae(vae, dt, offline)} if vae else {}
    with _compat.diffusers_loading():
        spec, pipe, source = _load_pipeline(name, dt, revision, config, offline, extra)
    family = "sdxl" if type(pipe).__name__.startswith("StableDiffusionXL") else "sd15"
    if dev.type == "cuda":
        gpu_levers(pipe)
    native = spec.native if spec else int(pipe.unet.config.sample_size) * pipe.vae_scale_factor
    name = spec.name if spec else Path(str(name_or_path)).name
    default = scheduler or (spec.scheduler if spec else "DPM++ 2M Karras")
    return Generator(pipe, name=name, family=family, native=native, spec=spec, device=dev,
                     dtype=dt, memory=memory, scheduler=default, source=source, offline=offline)


def gpu_levers(pipe) -> None:
    """What makes a diffusers pipeline faster on CUDA at no cost in output: channels_last
    UNet and VAE (faster convolutions on tensor cores) and cuDNN autotuning (one image size
    per run, so each shape is tuned once)."""
    import torch

    torch.backends.cudnn.benchmark = True
    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)


def _registered(name: str):
    """The registry entry of ``name``, or None for a path or an unregistered Hub id."""
    if Path(name).expanduser().exists() or name.endswith((".safetensors", ".ckpt")):
        return None
    try:
        return generator_spec(name)
    except ValueError:
        if name.count("/") != 1:
            raise
        return None


def _load_vae(vae: str, dtype, offline: bool):
    """An AutoencoderKL from a folder, an attached Kaggle input or the Hub."""
    from diffusers import AutoencoderKL

    return _load_component(AutoencoderKL, vae, dtype, offline)[0]


def _load_component(cls, repo: str, dtype, offline: bool, revision: str | None = None):
    """(a diffusers model of ``cls``, where it came from) for a local folder, an attached
    Kaggle input whose path names ``repo`` (one holding config.json), or the Hub id ``repo``."""
    from . import _compat

    local = Path(repo).expanduser()
    where = local if local.is_dir() else kaggle_model_dir(repo, marker="config.json")
    kwargs = dict(torch_dtype=dtype, local_files_only=offline or where is not None)
    if where is None and revision:
        kwargs["revision"] = revision
    try:
        with _compat.diffusers_loading():
            model = cls.from_pretrained(str(where or repo), **kwargs)
    except OSError as e:
        raise _not_found(repo, offline, e) from e
    return model, str(where) if where is not None else f"hf://{repo}"


def load_controlnet(which, dtype, offline: bool):
    """(ControlNetModel, where it came from) for a registry spec (pegu.registry.CONTROLNETS),
    a Hub id or a diffusers ControlNet folder: the tiny ones are built in code; the others
    come from a folder, an attached Kaggle input (found by the repo's name) or the Hub."""
    from diffusers import ControlNetModel

    spec = None if isinstance(which, str) else which
    if spec is not None and spec.tiny:
        from .tiny import build_tiny_controlnet, tiny_folder

        where = tiny_folder(spec.name, spec.family, cache_dir() / "controlnets",
                            build=build_tiny_controlnet)
        model, _ = _load_component(ControlNetModel, str(where), dtype, offline)
        return model, f"{where} (built in code, random weights)"
    return _load_component(ControlNetModel, spec.repo if spec else which, dtype, offline,
                           revision=spec.revision if spec else None)


# SD 1.5 repos list a safety checker and its CLIPFeatureExtractor (a class transformers 5
# removed); neither is loaded, so neither is downloaded (diffusers skips passed components)
_SD15_UNUSED = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _load_pipeline(name: str, dtype, revision, config, offline: bool, extra: dict):
    """(registry spec or None, pipeline on the CPU, where it came from)."""
    from diffusers import DiffusionPipeline

    path = Path(name).expanduser()
    common = dict(torch_dtype=dtype, **extra)
    no_checker = dict(common, **_SD15_UNUSED)
    if path.is_file() or path.suffix in (".safetensors", ".ckpt"):
        return None, _single_file(path, config, dtype, offline, extra), str(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise FileNotFoundError(f"{path} is not a diffusers folder (no model_index.json)")
        xl = "StableDiffusionXL" in (path / "model_index.json").read_text()
        return None, _from_pretrained(DiffusionPipeline, str(path),
                                      common if xl else no_checker, local=True), str(path)
    spec = _registered(name)  # None: an unregistered Hub id
    if spec is not None and spec.family == "sdxl":
        no_checker = common
    if spec is not None and spec.tiny:
        from .tiny import tiny_folder

        folder = tiny_folder(spec.name, spec.family, cache_dir() / "generators")
        return spec, _from_pretrained(DiffusionPipeline, str(folder), no_checker, local=True), \
            f"{folder} (built in code, random weights)"
    repo = spec.repo if spec else name
    kaggle = kaggle_model_dir(repo)
    if kaggle is not None:
        return spec, _from_pretrained(DiffusionPipeline, str(kaggle), no_checker, local=True), \
            str(kaggle)
    kwargs = dict(no_checker, revision=revision or (spec.revision if spec else None))
    if spec and spec.variant:
        kwargs["variant"] = spec.variant
    try:
        pipe = _from_pretrained(DiffusionPipeline, repo, kwargs, local=offline)
    except OSError as e:
        raise _not_found(repo, offline, e) from e
    return spec, pipe, f"hf://{repo}@{kwargs['revision'] or 'main'}"


def _not_found(repo: str, offline: bool, error: Exception) -> FileNotFoundError:
    """One error naming the model, where pegu looked, and how to provide it."""
    from huggingface_hub import constants

    from .kaggle import input_root

    kaggle = input_root()
    how = ("offline mode is on" if offline else
           f"downloading failed ({error.__class__.__name__}: {str(error).splitlines()[0][:120]})")
    return FileNotFoundError(
        f"cannot load {repo}: it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
        f"nor under {kaggle}, and {how}. Provide it one of these ways: run once with internet "
        f"on (or `huggingface-cli download {repo}`); attach it as a Kaggle model or dataset "
        "(found by name among the inputs); or pass the path of a local diffusers folder "
        "or .safetensors file.")


def _from_pretrained(cls, where: str, kwargs: dict, local: bool):
    pipe = cls.from_pretrained(where, local_files_only=local, **kwargs)
    if not type(pipe).__name__.startswith(("StableDiffusionPipeline", "StableDiffusionXL")):
        raise ValueError(f"{where} is a {type(pipe).__name__}; pegu runs Stable Diffusion 1.5 "
                         "and SDXL text-to-image pipelines")
    return pipe


def _single_file(path: Path, config, dtype, offline: bool, extra: dict):
    """A single-file checkpoint; ``config`` (a diffusers folder) makes it work offline."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    family = "sdxl" if any(k.startswith("conditioner.") for k in _checkpoint_keys(path)) \
        else "sd15"
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    if config is None and offline:
        raise ValueError(f"{path.name} is a single-file checkpoint; offline, give config= a "
                         f"diffusers folder of the same family ({family}), e.g. a saved "
                         "pipeline, so pegu knows its layout")
    kwargs = dict(torch_dtype=dtype, local_files_only=offline, **extra)
    if config is not None:
        kwargs["config"] = str(Path(config).expanduser())
    if family == "sd15":
        kwargs.update(_SD15_UNUSED)
    return cls.from_single_file(str(path), **kwargs)


def _checkpoint_keys(path: Path) -> list[str]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    from .weights import load_state_dict

    return list(load_state_dict(path))


def kaggle_model_dir(repo: str, marker: str = "model_index.json") -> Path | None:
    """A folder for ``repo`` in an attached Kaggle input (any mount layout, see
    :func:`pegu.kaggle.find_attached`): one holding ``marker`` (model_index.json for a
    pipeline, config.json for a VAE) whose path names the repo (e.g.
    .../realistic_vision_v6.0_b1_novae/)."""
    from .kaggle import find_attached

    want = repo.split("/")[-1].lower().replace("-", "_")
    for index in find_attached(marker, depth=6):
        if want in str(index.parent).lower().replace("-", "_"):
            return index.parent
    return None


def controlnet_availability(spec) -> str:
    """"cached" when a registry ControlNet is on this machine, else where it would come from."""
    if spec.tiny:
        built = (cache_dir() / "controlnets" / spec.name / "config.json").is_file()
        return "cached" if built else "built on use"
    if kaggle_model_dir(spec.repo, marker="config.json") is not None:
        return "kaggle input"
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.repo, "config.json", revision=spec.revision)
    return "cached" if isinstance(found, str) else "download"


def generator_availability(spec) -> str:
    """"cached" when the weights are on this machine, else where they would come from."""
    if spec.tiny:
        built = (cache_dir() / "generators" / spec.name / "model_index.json").is_file()
        return "cached" if built else "built on use"
    if kaggle_model_dir(spec.repo) is not None:
        return "kaggle input"
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.utils import CacheNotFound

    try:
        cached = {r.repo_id for r in scan_cache_dir().repos}
    except CacheNotFound:  # nothing downloaded yet
        cached = set()
    return "cached" if spec.repo in cached else "download"
