"""Loading a text-to-image model: a registry name, a Hub id, a diffusers folder or a single
checkpoint file, with the VAE its card recommends. Where the files come from is
pegu.sources' answer."""
from __future__ import annotations

from pathlib import Path

from ..core import compat
from ..core.device import check_gpu, resolve_device, resolve_dtype
from ..core.errors import BadInput, MissingFile, PeguError, WeightsError
from ..core.registry import DEFAULT_GENERATOR, generator_spec
from ..core.settings import check_scheduler
from ..sources import first_line, from_pretrained, is_offline, tensor_names
from ..sources.resolve import built_folder
from .generator import Generator
from .memory import MEMORY_LEVELS
from .tiny import build_tiny, tiny_folder


def load_generator(name_or_path: str | Path = DEFAULT_GENERATOR, *, device="auto",
                   dtype="auto", memory: str = "auto", scheduler: str | None = None,
                   vae: str | None = None, config: str | Path | None = None,
                   revision: str | None = None, offline: bool | None = None) -> Generator:
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
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    check_gpu(dev, dt)
    if memory != "auto" and memory not in MEMORY_LEVELS + ("cpu",):
        raise BadInput(f"memory must be 'auto' or one of {', '.join(MEMORY_LEVELS)}, "
                       f"got {memory!r}")
    if dev.type == "cpu" and memory not in ("auto", "cpu"):
        raise BadInput(f"memory={memory!r} is for GPUs; on the CPU use 'auto'")
    if scheduler is not None:
        scheduler = check_scheduler(scheduler)
    offline = is_offline(offline)
    name = str(name_or_path)
    spec = registered(name)
    vae = vae if vae is not None else (spec.vae if spec else None)
    # the replacement VAE is loaded first and passed in: the model's own is never fetched
    extra = {"vae": _load_vae(vae, dt, offline)} if vae else {}
    with compat.quiet_loading():
        pipe, source = _load_pipeline(name, spec, dt, revision, config, offline, extra)
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
    UNet and VAE (faster convolutions on tensor cores). cuDNN's autotuner is on during each
    call (pegu.core.device.autotuned), not switched on for the process."""
    import torch

    pipe.unet.to(memory_format=torch.channels_last)
    pipe.vae.to(memory_format=torch.channels_last)


def registered(name: str):
    """The registry entry of ``name``, or None for a path or an unregistered Hub id."""
    if Path(name).expanduser().exists() or name.endswith((".safetensors", ".ckpt")):
        return None
    try:
        return generator_spec(name)
    except BadInput:
        if name.count("/") != 1:
            raise
        return None


def _load_vae(vae: str, dtype, offline: bool):
    """An AutoencoderKL from a folder, an attached Kaggle input or the Hub."""
    from diffusers import AutoencoderKL

    with compat.quiet_loading():
        return from_pretrained(AutoencoderKL.from_pretrained, vae, marker="config.json",
                               offline=offline, torch_dtype=dtype)[0]


# SD 1.5 repos list a safety checker and its CLIPFeatureExtractor (a class transformers 5
# removed); neither is loaded, so neither is downloaded (diffusers skips passed components)
_SD15_UNUSED = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _load_pipeline(name: str, spec, dtype, revision, config, offline: bool, extra: dict):
    """(pipeline on the CPU, where it came from)."""
    from diffusers import DiffusionPipeline

    path = Path(name).expanduser()
    common = dict(torch_dtype=dtype, **extra)
    if path.is_file() or path.suffix in (".safetensors", ".ckpt"):
        return _single_file(path, config, dtype, offline, extra), str(path)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise MissingFile(f"{path} is not a diffusers folder (no model_index.json)")
        xl = "StableDiffusionXL" in (path / "model_index.json").read_text()
    else:
        xl = spec is not None and spec.family == "sdxl"
    kwargs = common if xl else dict(common, **_SD15_UNUSED)
    if spec is not None and spec.tiny:
        folder = tiny_folder(built_folder(spec), spec.family, build=build_tiny)
        pipe = DiffusionPipeline.from_pretrained(str(folder), local_files_only=True, **kwargs)
        return _checked(pipe, folder), f"{folder} (built in code, random weights)"
    repo = spec.repo if spec else name
    pipe, source = from_pretrained(
        DiffusionPipeline.from_pretrained, repo, marker="model_index.json", offline=offline,
        revision=revision or (spec.revision if spec else None),
        hub={"variant": spec.variant} if spec and spec.variant else None, **kwargs)
    return _checked(pipe, repo), source


def _checked(pipe, where):
    """``pipe`` if it is a Stable Diffusion 1.5 or SDXL text-to-image pipeline."""
    if not type(pipe).__name__.startswith(("StableDiffusionPipeline", "StableDiffusionXL")):
        raise BadInput(f"{where} is a {type(pipe).__name__}; pegu runs Stable Diffusion 1.5 "
                       "and SDXL text-to-image pipelines")
    return pipe


def _single_file(path: Path, config, dtype, offline: bool, extra: dict):
    """A single-file checkpoint; ``config`` (a diffusers folder) makes it work offline."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if not path.is_file():
        raise MissingFile(f"checkpoint not found: {path}")
    keys = tensor_names(path, "checkpoint")
    if not any(k.startswith(("model.diffusion_model.", "conditioner.")) for k in keys):
        raise WeightsError(f"{path} is not a Stable Diffusion checkpoint (no UNet tensors "
                           "'model.diffusion_model.*'): a LoRA, embedding, VAE or another "
                           "kind of file? Give --model a full SD 1.5 or SDXL checkpoint")
    family = "sdxl" if any(k.startswith("conditioner.") for k in keys) else "sd15"
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    if config is None and offline:
        raise BadInput(f"{path.name} is a single-file checkpoint; offline, give config= a "
                       f"diffusers folder of the same family ({family}), e.g. a saved "
                       "pipeline, so pegu knows its layout")
    kwargs = dict(torch_dtype=dtype, local_files_only=offline, **extra)
    if config is not None:
        kwargs["config"] = str(Path(config).expanduser())
    if family == "sd15":
        kwargs.update(_SD15_UNUSED)
    try:
        return cls.from_single_file(str(path), **kwargs)
    except (PeguError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001  diffusers' conversion on a damaged or odd file
        raise WeightsError(f"{path} could not be read as an {family} checkpoint "
                           f"({type(e).__name__}: {first_line(e)}); check that the file is "
                           "complete and is a Stable Diffusion 1.5 or SDXL checkpoint") \
            from None
