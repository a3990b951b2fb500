"""tiny-sd15 and tiny-sdxl: random-weight pipelines with the real architectures in miniature.

SMOKE-TEST MODELS: they make noise, not pictures. They exist so that everything pegu does
(loading, schedulers, seeds, memory policies, upscaling, saving) runs offline and fast, through
the same code as the real models. Built with a fixed seed, saved with ``save_pretrained``
into pegu's cache on first use, and loaded from there like any diffusers folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..core import compat
from ..core.errors import BadInput

# Words the tiny tokenizer knows whole (others are spelled letter by letter, as CLIP does
# with rare words); enough for prompts about people and places.
_WORDS = """a an the of and with in on at by for from to photo photograph portrait raw dslr
film grain lighting light soft hard natural studio golden hour sunset sunrise night day
woman man girl boy person people child old young elderly smiling smile face eyes hair
blonde brown black red white grey gray blue green yellow orange purple pink dark long
short curly straight wearing shirt jacket dress coat suit sweater hat glasses scarf
standing sitting walking street city park beach forest mountain room office cafe kitchen
garden background bokeh close up full body half detailed high quality sharp focus 8k uhd
cinematic realistic skin texture painting illustration cartoon render 3d drawing anime
blurry low worst ugly deformed bad hands text watermark""".split()


def tiny_tokenizer():
    """A CLIP BPE tokenizer of bytes plus merges that spell ``_WORDS``, loaded from the files
    a CLIP repo ships (vocab.json, merges.txt), as every transformers release reads them."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        write_tokenizer_files(Path(folder))
        return CLIPTokenizer.from_pretrained(folder)


def write_tokenizer_files(folder: Path) -> None:
    """The tiny tokenizer as a CLIP repo's tokenizer/ folder: vocab.json, merges.txt,
    special_tokens_map.json, tokenizer_config.json (no tokenizer.json)."""
    import json

    vocab, merges = tiny_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").unlink(missing_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, **special}))


def tiny_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The tiny tokenizer's vocabulary and BPE merges (what vocab.json, merges.txt hold)."""
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars + [c + "</w>" for c in chars])}
    merges = []
    for word in sorted(set(_WORDS)):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left = left + right
            vocab.setdefault(left, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE (GPT-2, CLIP)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _text_encoder(vocab_size: int, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                            num_attention_heads=4, num_hidden_layers=2, projection_dim=32,
                            max_position_embeddings=77, bos_token_id=vocab_size - 2,
                            eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    model = (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)
    # a learned-looking final LayerNorm bias: a fresh one (0) makes every embedding's mean
    # exactly 0, which no trained CLIP has and A1111's emphasis divides by
    bias = next(p for n, p in model.named_parameters() if n.endswith("final_layer_norm.bias"))
    bias.data.uniform_(-0.5, 0.5)
    return model


def _vae(sample_size: int):
    from diffusers import AutoencoderKL

    # four blocks: the real 8x downsampling, with few channels
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(8, 16, 16, 16), layers_per_block=1,
                         norm_num_groups=8, sample_size=sample_size, force_upcast=False)


def build_tiny(family: str):
    """A random-weight pipeline of ``family`` ("sd15" or "sdxl"), seeded, on the CPU."""
    import torch
    from diffusers import (EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline,
                           StableDiffusionXLPipeline, UNet2DConditionModel)

    torch.manual_seed(0)
    tok = tiny_tokenizer()
    n = len(tok)
    common = dict(block_out_channels=(32, 64), layers_per_block=1, in_channels=4,
                  out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), norm_num_groups=32)
    betas = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 num_train_timesteps=1000, steps_offset=1)
    if family == "sd15":
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=32,
                                    attention_head_dim=8, **common)
        return StableDiffusionPipeline(
            vae=_vae(512), text_encoder=_text_encoder(n, False), tokenizer=tok, unet=unet,
            scheduler=PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=False, **betas),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if family == "sdxl":
        unet = UNet2DConditionModel(
            sample_size=128, cross_attention_dim=64, attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
            projection_class_embeddings_input_dim=6 * 8 + 32, **common)
        return StableDiffusionXLPipeline(
            vae=_vae(1024), text_encoder=_text_encoder(n, False),
            text_encoder_2=_text_encoder(n, True), tokenizer=tok, tokenizer_2=tiny_tokenizer(),
            unet=unet, scheduler=EulerDiscreteScheduler(timestep_spacing="leading", **betas))
    raise BadInput(f"unknown family {family!r}; use 'sd15' or 'sdxl'")


def build_tiny_controlnet(family: str):
    """A random-weight ControlNet for the tiny model of ``family``: diffusers' copy of its
    UNet's encoder, with the zero-initialised output convolutions made small and random so
    that the control changes the result (a fresh ControlNet adds exactly nothing)."""
    import torch
    from diffusers import ControlNetModel

    unet = build_tiny(family).unet
    torch.manual_seed(1)
    net = ControlNetModel.from_unet(unet)
    zero = [net.controlnet_cond_embedding.conv_out, *net.controlnet_down_blocks,
            net.controlnet_mid_block]
    with torch.no_grad():
        for conv in zero:
            conv.weight.normal_(0, 0.05)
            conv.bias.normal_(0, 0.05)
    return net


BUILD = "2"  # raise when build_tiny changes: cached folders of another build are rebuilt


def tiny_folder(folder: Path, family: str, build=build_tiny) -> Path:
    """``folder``, holding what ``build(family)`` makes (the tiny pipeline by default),
    saved with this BUILD (built and saved atomically if absent or of another build)."""
    folder = Path(folder)
    name = folder.name
    stamp = folder / "pegu-tiny-build"
    if stamp.is_file() and stamp.read_text() == BUILD:
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{name}.{os.getpid()}.tmp")
    old = folder.with_name(f".{name}.{os.getpid()}.old")
    try:
        with compat.quiet_loading():  # quietly
            build(family).save_pretrained(tmp)
        (tmp / "pegu-tiny-build").write_text(BUILD)
        if folder.exists():
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished first
            if not stamp.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder
