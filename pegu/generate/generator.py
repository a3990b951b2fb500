"""The generator: a loaded diffusers text-to-image pipeline that generates, and refines
(img2img, untiled or on latent tiles, with or without a tile ControlNet), image by image with
the same seeds giving the same pixels."""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from ..core import compat
from ..core.device import autotuned, dtype_name
from ..core.errors import BadInput, NotFinite
from ..core.registry import GeneratorSpec, controlnet_spec, distill_spec
from ..core.settings import GenerateSettings, check_control_weight
from . import distill as dist
from . import memory as mem
from .controlnet import LoadedControlNet, load_controlnet
from .editing import build_plan, scheduled_unet, total_steps
from .prompts import apply_loras, extra_networks, file_hash, lora_tags
from .samplers import make_scheduler, seed_of
from .speedups import faster_unet
from .tiled import tiled_unet


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
    """An img2img refine: the image, whether the fp16 VAE needed the fp32 fallback, the
    memory level it ran at, and the tile ControlNet that conditioned it (its registry name,
    or the Hub id or folder asked for; None: none) and where that came from."""

    image: object
    vae_fp32_fallback: bool
    memory: str = ""
    controlnet: str | None = None
    controlnet_source: str | None = None


def _without_schedule(default: str, schedule: str | None) -> str:
    """A model's default sampler, its " Karras" dropped when a schedule type is asked for."""
    return default.removesuffix(" Karras") if schedule else default


class Generator:
    """A loaded text-to-image pipeline; build one with :func:`pegu.generate.load_generator`."""

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
        self._placement = "unset"  # where the pipeline's weights live; only ever rises
        self.scheduler = scheduler
        self.source = source
        self.offline = offline
        self._img2img = None
        self._controlnets: dict[str, LoadedControlNet] = {}  # by the name asked for
        self._scheduler_config = pipe.scheduler.config  # the model's own, never a previous call's
        self.warmed: set = set()  # run shapes already warmed up (pegu.pipeline.warm_up)
        self._compiled: dict = {}  # torch.compile'd UNets by (UNet, mode)
        self.distill_sources: dict[str, str] = {}  # distillation -> where its LoRA came from
        self.last_deepcache = None  # the last call's DeepCache (its call counts), if on

    def __repr__(self) -> str:
        return (f"Generator({self.name!r}, {self.family}, native {self.native}², "
                f"device={self.device}, dtype={dtype_name(self.dtype)}, "
                f"memory={self.memory_request}, scheduler={self.scheduler!r})")

    def resolve(self, settings: GenerateSettings) -> GenerateSettings:
        """``settings`` with each ``None`` replaced by this model's recommendation, or by
        its distillation card's (sampler, steps, guidance), and made fit for the
        distillation (see :meth:`notes`)."""
        return self._resolved(settings)[0]

    def _resolved(self, settings: GenerateSettings) -> tuple[GenerateSettings, list[str]]:
        spec = self.spec
        d = distill_spec(settings.distill) if settings.distill else None
        cfg = d is None or d.cfg  # without CFG the model's negative prompt is not used
        s = replace(
            settings,
            negative_prompt=settings.negative_prompt if settings.negative_prompt is not None
            else (spec.negative if spec and cfg else ""),
            width=settings.width or self.native, height=settings.height or self.native,
            steps=settings.steps or (d.steps if d else spec.steps if spec else 25),
            guidance=settings.guidance if settings.guidance is not None
            else (d.guidance if d else spec.guidance if spec else 7.0),
            scheduler=settings.scheduler or _without_schedule(
                d.scheduler if d else self.scheduler, settings.schedule))
        s, notes = dist.resolve(s, self.family)
        if d and not d.cfg and s.negative_prompt and settings.negative_prompt:
            notes.append(f"{d.name} runs without CFG, so the negative prompt is not used; "
                         "hyper-8-cfg and hyper-12-cfg keep it")
        return s, notes

    def memory_for(self, width: int, height: int, batch: int = 1) -> str:
        """The memory level a call of this size runs at (see pegu.generate.memory)."""
        level = mem.level_for(self.memory_request, self.family, width, height, batch,
                              self.device)
        return mem.label(level, self._placement, self.device)

    def generate(self, settings: GenerateSettings, progress: bool = True) -> GenerateResult:
        """Generate ``settings.batch_size`` images; image i uses a CPU ``torch.Generator``
        seeded with ``settings.seed + i``, so the same settings give the same images."""
        import torch

        t0 = time.perf_counter()
        s, fitted = self._resolved(settings)
        steps_run = len(own) if (own := dist.timesteps(s)) else s.steps
        conditioning, notes, used, loras, plan = self._conditioning(
            s, total_steps(s.scheduler, steps_run), images=s.batch_size)
        notes = fitted + notes
        for n in notes:
            warnings.warn(n, stacklevel=2)
        memory = self._apply_memory(s.width, s.height, s.batch_size)
        # a card's own timesteps (DMD2), else the sampler's
        steps = dict(timesteps=own) if own else dict(num_inference_steps=s.steps)
        images, fallback = self._call(
            self.pipe, s, progress, plan=plan, **conditioning, width=s.width, height=s.height,
            **steps, guidance_scale=s.guidance, num_images_per_prompt=s.batch_size,
            generator=[torch.Generator("cpu").manual_seed(x) for x in s.seeds])
        if fallback:
            notes.append("the fp16 VAE overflowed (NaN); decoded again in fp32")
        return GenerateResult(
            images=images, settings=s, model=self.name, seeds=s.seeds,
            dtype=dtype_name(self.dtype), memory=memory,
            device=str(self.device), vae_fp32_fallback=fallback,
            seconds=time.perf_counter() - t0, warnings=tuple(notes), embeddings=used,
            loras=loras)

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
        import torch

        s = self.resolve(settings)
        w, h = image.size
        if w % 8 or h % 8:
            raise BadInput(f"refine needs a size in multiples of 8, got {w}x{h}")
        if control is not None:
            check_control_weight("control", control)
        memory = self._apply_memory(w, h, 1)
        net = self._controlnet(controlnet) if control is not None else None
        pipe = self._img2img_pipe(net)
        run = steps or s.steps
        # A1111's hires pass: the prompt's hires schedule, and ``run`` steps taken from the
        # end of a schedule of int(run / strength) (sd_samplers_common.setup_img2img_steps)
        conditioning, _, _, _, plan = self._conditioning(
            s, total_steps(s.scheduler, s.steps), hires=total_steps(s.scheduler, run))
        total = max(run, int(run / min(strength, 0.999)))
        extra = {} if net is None else dict(control_image=image,
                                            controlnet_conditioning_scale=float(control))

        def call(tiles=None):
            return self._call(
                pipe, s, progress, tiles=tiles, plan=plan, **conditioning, image=image,
                **extra, strength=min(1.0, (run + 0.5) / total), num_inference_steps=total,
                guidance_scale=s.guidance, generator=torch.Generator("cpu").manual_seed(s.seed))

        if tiled:  # inside the speed-ups: DeepCache and ToMe see each tile's UNet call
            images, fallback = call(tiles=lambda: tiled_unet(
                pipe.unet, self.native // 8, batch=4 if self.device.type == "cuda" else 1,
                controlnet=None if net is None else net.model))
        else:
            images, fallback = call()
        if net is None:
            return RefineResult(images[0], fallback, memory)
        return RefineResult(images[0], fallback, memory, net.name, net.source)

    def _img2img_pipe(self, net: LoadedControlNet | None):
        """diffusers' img2img pipeline sharing this pipeline's components; with ``net`` (a
        loaded ControlNet) its ControlNet img2img pipeline."""
        with compat.quiet_loading():  # importing it imports Kolors, which warns
            from diffusers import AutoPipelineForImage2Image

            if net is None:
                if self._img2img is None:
                    self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
                return self._img2img
            if net.pipe is None:
                net.pipe = AutoPipelineForImage2Image.from_pipe(self.pipe, controlnet=net.model)
            return net.pipe

    def _controlnet(self, name: str | None) -> LoadedControlNet:
        """The ControlNet ``name`` names (None: the tile ControlNet of this model's family),
        loaded once and placed as the pipeline is (on the device, or offloaded layer by
        layer)."""
        spec = controlnet_spec(name, self.family, tiny=bool(self.spec and self.spec.tiny))
        key = spec.name if spec else str(name)
        if key not in self._controlnets:
            model, source = load_controlnet(spec or str(name), self.dtype, self.offline)
            self._check_controlnet(model, name)
            if self._placement == "sequential-offload":
                from accelerate import cpu_offload

                cpu_offload(model, execution_device=self.device)
            else:
                model.to(self.device)
            self._controlnets[key] = LoadedControlNet(model, spec, source,
                                                      None if spec else str(name))
        return self._controlnets[key]

    def _check_controlnet(self, model, name) -> None:
        """Refuse a ControlNet of the other family (its text width or added conditioning
        differs from this UNet's), before it runs into a shape error mid-refine."""
        want, got = self.pipe.unet.config, model.config
        keys = ("cross_attention_dim", "addition_embed_type")
        if any(getattr(want, k, None) != getattr(got, k, None) for k in keys):
            other = "SDXL" if getattr(got, "addition_embed_type", None) == "text_time" \
                else "SD 1.5"
            raise BadInput(f"the ControlNet {name} is for {other} models (text width "
                           f"{got.cross_attention_dim}); this model is "
                           f"{'SDXL' if self.family == 'sdxl' else 'SD 1.5'} (text width "
                           f"{want.cross_attention_dim}): give --controlnet a "
                           f"{self.family} tile ControlNet (pegu models)")

    def _call(self, pipe, s: GenerateSettings, progress: bool, tiles=None, plan=None,
              **kwargs):
        """Run ``pipe`` with the sampler and UNet speed-ups of ``s`` (and ``tiles()``, the
        tiled UNet's context, around them, and the ``plan``'s conditioning per call when it
        changes between calls); (PIL images, fp32-VAE fallback used)."""
        seed = seed_of(kwargs["generator"])
        pipe.scheduler = make_scheduler(s.scheduler, self._scheduler_config, seed=seed,
                                        schedule=s.schedule, sdxl=self.family == "sdxl")
        pipe.set_progress_bar_config(disable=not progress, desc=f"{self.name} steps",
                                     leave=False)
        final = {}

        def keep_latents(p, step, timestep, kw):
            final["latents"] = kw["latents"]
            return kw

        with autotuned(self.device), compat.quiet(), compat.diffusers_quiet(), faster_unet(
                pipe, s, seed=seed, device=self.device,
                compiled_cache=self._compiled) as cache, \
                (tiles() if tiles else contextlib.nullcontext()), \
                (scheduled_unet(pipe.unet, plan) if plan is not None and not plan.static
                 else contextlib.nullcontext()):
            images = pipe(output_type="np", callback_on_step_end=keep_latents, **kwargs).images
        self.last_deepcache = cache
        fallback = bool(np.isnan(images).any())
        if fallback:
            images = self._decode_fp32(final["latents"])
        return pipe.numpy_to_pil(images), fallback

    def _conditioning(self, s: GenerateSettings, steps: int, hires: int | None = None,
                      images: int = 1):
        """(the pipeline's text keywords for ``s``, notes about them, the embeddings used
        {name: short hash}, the LoRAs active, the editing Plan or None): the prompt read A1111's
        way over a schedule of ``steps`` (``hires``: a hires pass of that many) by
        pegu.generate.editing, or the plain text that diffusers cuts at 77 tokens."""
        fixed = self._distill_adapter(s)
        if s.prompt_syntax == "plain":
            apply_loras(self.pipe, [], fixed)  # the user's all off
            notes = [n for n in (self._prompt_note("prompt", s.prompt),
                                 self._prompt_note("negative prompt", s.negative_prompt)) if n]
            return (dict(prompt=s.prompt, negative_prompt=s.negative_prompt or None), notes,
                    {}, {}, None)
        # A1111 activates the prompt's LoRA tags and removes every tag from it; the
        # negative prompt keeps its tags as text (extra_networks.parse_prompts)
        tags, notes = lora_tags(s.prompt)
        loras = apply_loras(self.pipe, tags, fixed)
        if s.clip_skip > 1 and self.family == "sdxl":
            notes.append(f"Clip skip {s.clip_skip} has no effect on SDXL, as in A1111 (its "
                         "text encoders' penultimate layer is always used)")
        plan, used = build_plan(self.pipe, extra_networks(s.prompt)[0], s.negative_prompt,
                                steps=steps, hires_steps=hires, images=images,
                                pad=s.pad_prompts, clip_skip=s.clip_skip)
        return (plan.first(), notes, {name: file_hash(path) for name, path in used}, loras,
                plan)

    def _distill_adapter(self, s: GenerateSettings) -> dict[str, float]:
        """{adapter: 1.0} of the distillation ``s`` asks for, loaded on first use (its source
        kept in ``distill_sources``); {} without one."""
        if s.distill is None:
            return {}
        d = distill_spec(s.distill)
        if d.name not in self.distill_sources:
            self.distill_sources[d.name] = dist.load_adapter(
                self.pipe, d, self.family, tiny=bool(self.spec and self.spec.tiny),
                offline=self.offline)
        return {dist.adapter_name(d): 1.0}

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
            raise NotFinite(
                f"{self.name} produced NaN latents (not only the VAE); try dtype='fp32', "
                "another scheduler, or fewer steps")
        return image

    def _apply_memory(self, width: int, height: int, batch: int) -> str:
        """Set the pipeline up for a call of this size; returns the memory level recorded."""
        level = mem.level_for(self.memory_request, self.family, width, height, batch,
                              self.device)
        self._placement = mem.apply(self.pipe, self.device, level, batch, self._placement)
        return mem.label(level, self._placement, self.device)
