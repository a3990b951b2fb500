"""Tiny stand-ins for the registry models' Hub repos, laid out as the real repos are, written
into a Hugging Face cache folder so that pegu loads them by registry name, offline, through
the path real downloads take.

Shapes, from the repos' file lists (huggingface.co/<repo>/tree/main):
* SG161222/Realistic_Vision_V6.0_B1_noVAE (commit dbc0712): model_index.json names a
  safety checker and ``transformers.CLIPFeatureExtractor``; component weights are ``.bin``
  only; single-file checkpoints sit at the root. emilianJR/CyberRealistic_V3: the same, .bin.
  emilianJR/epiCRealism: the same model_index, safetensors weights.
* stabilityai/stable-diffusion-xl-base-1.0: two text encoders, fp16 variant files
  (``*.fp16.safetensors``) beside the fp32 ones.
* stabilityai/sd-vae-ft-mse, madebyollin/sdxl-vae-fp16-fix: a VAE (config.json and weights).
* lllyasviel/control_v11f1e_sd15_tile (main): config.json and diffusion_pytorch_model.bin
  (the safetensors file exists only in an unmerged PR); xinsir/controlnet-tile-sdxl-1.0:
  config.json and diffusion_pytorch_model.safetensors.

Only what pegu needs is written: a component pegu must not load (the safety checker, the
feature extractor, a VAE that pegu replaces, the root checkpoints) is named in
model_index.json but absent, so loading it would fail offline.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

COMMIT = "0" * 40
REPOS = {  # repo: (family, weights format, replaced VAE absent)
    "SG161222/Realistic_Vision_V6.0_B1_noVAE": ("sd15", "bin", True),
    "emilianJR/epiCRealism": ("sd15", "safetensors", False),
    "emilianJR/CyberRealistic_V3": ("sd15", "bin", False),
    "stabilityai/stable-diffusion-xl-base-1.0": ("sdxl", "fp16", True),
}
VAES = {"stabilityai/sd-vae-ft-mse": 512, "madebyollin/sdxl-vae-fp16-fix": 1024}
CONTROLNETS = {"lllyasviel/control_v11f1e_sd15_tile": ("sd15", "bin"),
               "xinsir/controlnet-tile-sdxl-1.0": ("sdxl", "safetensors")}


def snapshot(cache: Path, repo: str) -> Path:
    """The snapshot folder of ``repo`` in the cache ``cache`` (refs/main points to it)."""
    root = Path(cache) / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    folder = root / "snapshots" / COMMIT
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _bin_only(folder: Path) -> None:
    """Replace each component's safetensors weights by a pytorch .bin (as the repo has)."""
    import torch
    from safetensors.torch import load_file

    for f in list(folder.glob("*/*.safetensors")):
        name = "pytorch_model.bin" if f.name == "model.safetensors" \
            else "diffusion_pytorch_model.bin"
        torch.save(load_file(str(f)), f.with_name(name))
        f.unlink()


def write_repo(cache: Path, repo: str) -> Path:
    """``repo`` as a tiny pipeline of its shape in ``cache``; returns its snapshot."""
    from pegu.generate.tiny import build_tiny, write_tokenizer_files

    family, weights, vae_replaced = REPOS[repo]
    folder = snapshot(cache, repo)
    pipe = build_tiny(family)
    if weights == "fp16":
        pipe.save_pretrained(folder, variant="fp16")
    else:
        pipe.save_pretrained(folder)
        if weights == "bin":
            _bin_only(folder)
    for tok in folder.glob("tokenizer*/"):  # as the repos ship CLIP tokenizers
        write_tokenizer_files(tok)
    index = json.loads((folder / "model_index.json").read_text())
    if family == "sd15":
        index.update(feature_extractor=["transformers", "CLIPFeatureExtractor"],
                     safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                     requires_safety_checker=True)
        (folder / "Realistic_Vision_V6.0_NV_B1.safetensors").write_bytes(b"not to be read")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    if vae_replaced:
        shutil.rmtree(folder / "vae")
    return folder


def write_vae(cache: Path, repo: str) -> Path:
    from pegu.generate.tiny import _vae

    folder = snapshot(cache, repo)
    _vae(VAES[repo]).save_pretrained(folder)
    return folder


def write_controlnet(cache: Path, repo: str) -> Path:
    """A tiny tile ControlNet for the tiny model of the repo's family, in the repo's format."""
    from pegu.generate.tiny import build_tiny_controlnet

    family, weights = CONTROLNETS[repo]
    folder = snapshot(cache, repo)
    build_tiny_controlnet(family).save_pretrained(folder, safe_serialization=weights != "bin")
    return folder
