"""Write a diffusers SD 1.5 pipeline as an original (CompVis / A1111) single-file checkpoint.

The inverse of diffusers' single-file loader, after diffusers' own
scripts/convert_diffusers_to_original_stable_diffusion.py, generalised from the real
layout (4 blocks × 2 layers) to any ``layers_per_block`` so the tiny test model converts.
"""
from __future__ import annotations


def _unet_map(unet) -> dict[str, str]:
    cfg = unet.config
    n_layers = cfg.layers_per_block
    blocks = len(cfg.block_out_channels)
    pairs = [("time_embed.0.", "time_embedding.linear_1."),
             ("time_embed.2.", "time_embedding.linear_2."),
             ("input_blocks.0.0.", "conv_in."), ("out.0.", "conv_norm_out."),
             ("out.2.", "conv_out."), ("middle_block.1.", "mid_block.attentions.0."),
             ("middle_block.0.", "mid_block.resnets.0."),
             ("middle_block.2.", "mid_block.resnets.1.")]
    for i in range(blocks):
        for j in range(n_layers):
            idx = 1 + i * (n_layers + 1) + j
            pairs.append((f"input_blocks.{idx}.0.", f"down_blocks.{i}.resnets.{j}."))
            pairs.append((f"input_blocks.{idx}.1.", f"down_blocks.{i}.attentions.{j}."))
        if i < blocks - 1:
            pairs.append((f"input_blocks.{(i + 1) * (n_layers + 1)}.0.op.",
                          f"down_blocks.{i}.downsamplers.0.conv."))
        up_has_attn = "CrossAttn" in cfg.up_block_types[i]
        for j in range(n_layers + 1):
            idx = i * (n_layers + 1) + j
            pairs.append((f"output_blocks.{idx}.0.", f"up_blocks.{i}.resnets.{j}."))
            pairs.append((f"output_blocks.{idx}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < blocks - 1:
            last = i * (n_layers + 1) + n_layers
            pairs.append((f"output_blocks.{last}.{2 if up_has_attn else 1}.",
                          f"up_blocks.{i}.upsamplers.0."))
    return pairs


_RESNET = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
           ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"),
           ("skip_connection", "conv_shortcut")]


def _convert(keys, pairs, resnet_parts=()):
    out = {}
    for k in keys:
        v = k
        for sd, hf in pairs:
            if v.startswith(hf):
                v = sd + v[len(hf):]
                if "resnets" in hf or sd.startswith(("middle_block.0", "middle_block.2")):
                    for sd_part, hf_part in resnet_parts:
                        v = v.replace(hf_part, sd_part)
                break
        out[k] = v
    return out


def _vae_map(vae) -> list[tuple[str, str]]:
    n = vae.config.layers_per_block
    blocks = len(vae.config.block_out_channels)
    pairs = [("encoder.mid.attn_1.", "encoder.mid_block.attentions.0."),
             ("decoder.mid.attn_1.", "decoder.mid_block.attentions.0.")]
    for part in ("encoder", "decoder"):
        for i in range(2):
            pairs.append((f"{part}.mid.block_{i + 1}.", f"{part}.mid_block.resnets.{i}."))
    for i in range(blocks):
        for j in range(n):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < blocks - 1:
            pairs.append((f"encoder.down.{i}.downsample.",
                          f"encoder.down_blocks.{i}.downsamplers.0."))
            pairs.append((f"decoder.up.{blocks - 1 - i}.upsample.",
                          f"decoder.up_blocks.{i}.upsamplers.0."))
        for j in range(n + 1):
            pairs.append((f"decoder.up.{blocks - 1 - i}.block.{j}.",
                          f"decoder.up_blocks.{i}.resnets.{j}."))
    pairs += [("encoder.norm_out.", "encoder.conv_norm_out."),
              ("decoder.norm_out.", "decoder.conv_norm_out.")]
    return pairs


_VAE_ATTN = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."),
             ("proj_out.", "to_out.0.")]


def save_original_sd15(pipe, path) -> None:
    """Save ``pipe`` (a StableDiffusionPipeline) as one original-layout .safetensors file."""
    from safetensors.torch import save_file

    state = {}
    unet = pipe.unet.state_dict()
    for k, v in _convert(unet, _unet_map(pipe.unet), _RESNET).items():
        state["model.diffusion_model." + v] = unet[k]
    vae = pipe.vae.state_dict()
    names = _convert(vae, _vae_map(pipe.vae))
    for k, v in names.items():
        w = vae[k]
        if ".mid.attn_1." in v:
            for sd_part, hf_part in _VAE_ATTN:
                v = v.replace(".mid.attn_1." + hf_part, ".mid.attn_1." + sd_part)
            if w.ndim == 2:  # linear -> 1x1 conv
                w = w[:, :, None, None]
        v = v.replace("conv_shortcut", "nin_shortcut")
        state["first_stage_model." + v] = w
    for k, v in pipe.text_encoder.state_dict().items():  # transformers 5 drops "text_model."
        state["cond_stage_model.transformer." + ("" if k.startswith("text_model.") else
                                                 "text_model.") + k] = v
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
