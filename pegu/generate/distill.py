"""Few-step distillation LoRAs (registry.DISTILLATIONS): the weights found like every other
file (pegu.sources.fetch_file: cache, Kaggle input, download), checked against the UNet,
loaded as a PEFT adapter beside the user's LoRAs, and the sampling each card prescribes."""
from __future__ import annotations

import os
import re
import zlib
from dataclasses import replace
from pathlib import Path

from ..core import compat
from ..core.errors import WeightsError
from ..core.registry import DistillSpec, WeightFile, distill_spec
from ..core.settings import DISTILLED_SAMPLERS, GenerateSettings
from ..sources import cached_file, fetch_file
from .tiny import build_tiny

ADAPTER_PREFIX = "pegu_distill_"
TINY_RANK = 4


def adapter_name(spec: DistillSpec) -> str:
    """The PEFT adapter name of ``spec``'s LoRA (apart from the user's <lora:...> ones)."""
    return ADAPTER_PREFIX + re.sub(r"\W", "_", spec.name)


def resolve(s: GenerateSettings, family: str) -> tuple[GenerateSettings, list[str]]:
    """``s`` (defaults already resolved) made fit for its distillation, and a note for each
    change: a sampler, steps or guidance the card rules out becomes the card's. Refuses a
    distillation that does not exist for ``family``. Without one, a note when the sampler
    only suits distilled models."""
    if s.distill is None:
        if s.scheduler in DISTILLED_SAMPLERS:
            return s, [f"the sampler {s.scheduler} is made for distilled models; on a model "
                       "without a distillation it gives noise: add distill='lcm' (or "
                       "--distill lcm), or pick another sampler"]
        return s, []
    d = distill_spec(s.distill)
    d.file(family)  # refuses the other family, naming what exists for this one
    notes, changes = [], {}
    if (s.scheduler, s.schedule) == ("Euler", "SGM Uniform"):  # A1111's name of Lightning's
        s = replace(s, scheduler="Euler SGM Uniform", schedule=None)
    if s.scheduler not in d.schedulers:
        changes["scheduler"], changes["schedule"] = d.scheduler, None
        notes.append(f"{d.name} samples with {' or '.join(d.schedulers)}, not {s.scheduler}: "
                     f"using {d.scheduler}")
    lo, hi = d.step_range
    if not lo <= s.steps <= hi:
        changes["steps"] = d.steps
        span = f"{lo}" if lo == hi else f"{lo}-{hi}"
        notes.append(f"{d.name} is distilled for {span} steps, not {s.steps}: using {d.steps}")
    glo, ghi = d.guidance_range
    if not glo <= s.guidance <= ghi:
        changes["guidance"] = d.guidance
        notes.append(f"{d.name} works at guidance {glo:g}-{ghi:g}, not {s.guidance:g}: using "
                     f"{d.guidance:g}" + ("" if d.cfg else " (CFG off; for negative prompts "
                                          "use hyper-8-cfg)"))
    return replace(s, **changes), notes


def timesteps(s: GenerateSettings) -> list[int] | None:
    """The card's own timesteps for a run with its sampler and step count (DMD2's), else
    None (the sampler spaces them)."""
    if s.distill is None:
        return None
    d = distill_spec(s.distill)
    if d.timesteps and s.scheduler == d.scheduler and s.steps == len(d.timesteps):
        return list(d.timesteps)
    return None


def load_adapter(pipe, spec: DistillSpec, family: str, *, tiny: bool, offline: bool) -> str:
    """Load ``spec``'s LoRA for ``family`` into ``pipe`` as an adapter (once); returns where
    its weights came from. ``tiny``: the smoke-test models' stand-in, built in code in the
    card's key layout and cached as a file, then found like the real one."""
    name = adapter_name(spec)
    w = tiny_file(spec, family) if tiny else spec.file(family)
    if tiny and not cached_file(w).is_file():
        save_tiny_lora(cached_file(w), spec, family)
    unet = pipe.unet

    def build(state, where):
        check_fits(state, unet, where)
        return state

    state, where = fetch_file(w, offline=offline, build=build)
    loaded = pipe.get_list_adapters().get("unet", []) if getattr(
        unet, "peft_config", None) else []
    if name not in loaded:
        try:
            with compat.quiet(), compat.diffusers_quiet():
                pipe.load_lora_weights(dict(state), adapter_name=name)
        except (ValueError, KeyError, RuntimeError) as e:
            raise WeightsError(f"cannot use {where} as {spec.name}'s LoRA: {e}") from e
    return where


_CROSS_K = re.compile(r"attn2[._]to_k.*(lora_down|lora_A|lora\.down)\.weight$")


def check_fits(state: dict, unet, where: str) -> None:
    """A WeightsError unless ``state`` is a LoRA whose cross-attention takes this UNet's text
    width (768 for SD 1.5, 2048 for SDXL): the other family's file of the same name (both
    LCM-LoRAs are pytorch_lora_weights.safetensors) is told apart here."""
    want = int(unet.config.cross_attention_dim)
    for key, value in state.items():
        if _CROSS_K.search(key):
            if int(value.shape[-1]) != want:
                raise WeightsError(
                    f"{where} is a LoRA for a UNet whose text width is {value.shape[-1]}; this "
                    f"model's is {want} (SD 1.5: 768, SDXL: 2048): the other family's file?")
            return
    raise WeightsError(f"{where} has no LoRA weights for the UNet's cross-attention: not a "
                       "distillation LoRA")


# ---- the tiny stand-ins ----

def tiny_file(spec: DistillSpec, family: str) -> WeightFile:
    """Where the tiny stand-in of ``spec`` for ``family`` is kept (pegu's cache)."""
    return WeightFile(f"{spec.name} (tiny)", f"tiny-{spec.name}-{family}.safetensors", None,
                      None, "distill")


def tiny_lora(unet, layout: str, seed: int, rank: int = TINY_RANK) -> dict:
    """A random LoRA of ``rank`` on every attention projection of ``unet``, in ``layout``:
    "peft" (diffusers' saved form, ``unet.<module>.lora_A.weight`` / ``lora_B``) or "kohya"
    (``lora_unet_<module_with_underscores>.lora_down.weight`` / ``lora_up`` / ``alpha``)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, module in unet.named_modules():
        if not isinstance(module, torch.nn.Linear) or not re.search(
                r"attn[12]\.(to_q|to_k|to_v|to_out\.0)$", name):
            continue
        a = torch.randn(rank, module.in_features, generator=g) / module.in_features ** 0.5
        b = torch.randn(module.out_features, rank, generator=g) * 0.3 / rank ** 0.5
        if layout == "peft":
            out[f"unet.{name}.lora_A.weight"] = a
            out[f"unet.{name}.lora_B.weight"] = b
        elif layout == "kohya":
            key = "lora_unet_" + name.replace(".", "_")
            out[f"{key}.lora_down.weight"] = a
            out[f"{key}.lora_up.weight"] = b
            out[f"{key}.alpha"] = torch.tensor(float(rank))
        else:
            raise ValueError(f"layout is 'peft' or 'kohya', got {layout!r}")
    return out


def save_tiny_lora(path: Path, spec: DistillSpec, family: str) -> None:
    """Save the tiny stand-in of ``spec`` for the tiny ``family`` model (atomically)."""
    from safetensors.torch import save_file

    state = tiny_lora(build_tiny(family).unet, spec.layout, zlib.crc32(spec.name.encode()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
