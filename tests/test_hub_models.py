"""The registry models by name, offline, from a Hugging Face cache holding tiny stand-ins
laid out as the real repos are (tests/hub_repos.py): `pegu generate --model NAME` takes the
path a real download takes — .bin-only weights, a model_index.json naming a safety checker
and CLIPFeatureExtractor, fp16 variant files for SDXL, the replacement VAE passed at load."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hub_repos import CONTROLNETS, REPOS, VAES, write_controlnet, write_repo, write_vae
from pegu.core.registry import generator_spec


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("hf-hub")
    for repo in REPOS:
        write_repo(cache, repo)
    for repo in VAES:
        write_vae(cache, repo)
    for repo in CONTROLNETS:
        write_controlnet(cache, repo)
    return cache


@pytest.mark.parametrize("model", ["realistic-vision-v6", "epicrealism", "cyberrealistic-v3",
                                   "sdxl-base"])
def test_registry_model_from_the_hub_cache(model, hub_cache, tmp_path):
    env = dict(os.environ, HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1",
               PEGU_CACHE=str(tmp_path / "pegu"))
    out = tmp_path / "out.png"
    r = subprocess.run(
        [str(Path(sys.executable).parent / "pegu"), "generate", "a (RAW photo:1.2) of an old man",
         "--model", model, "--offline", "--size", "64x64", "--steps", "1",
         "--target", "128x128", "--upscaler", "realesr-animevideov3", "--out", str(out)]
        + (["--prompt-syntax", "plain"] if model == "epicrealism" else []),
        env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with Image.open(out) as im:
        assert im.size == (128, 128)
        record = json.loads(im.text["pegu"])
    syntax = record["settings"]["generate"]["prompt_syntax"]
    assert syntax == ("plain" if model == "epicrealism" else "a1111")
    assert ("Emphasis: None" in im.text["parameters"]) == (syntax == "plain")
    spec = generator_spec(model)
    assert record["choices"]["generator_source"] == f"hf://{spec.repo}@main"
    # what must not be loaded is absent from the cache: the safety checker, the feature
    # extractor, the model's own VAE where pegu swaps in the card's
    snap = next((hub_cache / f"models--{spec.repo.replace('/', '--')}").glob("snapshots/*"))
    assert not (snap / "safety_checker").exists() and not (snap / "feature_extractor").exists()
    assert (snap / "vae").exists() == (spec.vae is None)


@pytest.mark.parametrize("model", ["realistic-vision-v6", "sdxl-base"])
def test_registry_controlnet_from_the_hub_cache(model, hub_cache, tmp_path):
    """`--refine-control` loads the family's tile ControlNet by registry name from the cache
    (lllyasviel's .bin-only main branch, xinsir's safetensors), tiled at the target."""
    env = dict(os.environ, HF_HUB_CACHE=str(hub_cache), HF_HUB_OFFLINE="1",
               PEGU_CACHE=str(tmp_path / "pegu"))
    out = tmp_path / "out.png"
    size = 64 if model != "sdxl-base" else 128
    r = subprocess.run(
        [str(Path(sys.executable).parent / "pegu"), "generate", "portrait of an old man",
         "--model", model, "--offline", "--size", f"{size}x{size}", "--steps", "1",
         "--target", f"{2 * size}x{2 * size}", "--upscaler", "realesr-animevideov3",
         "--refine", "0.5", "--refine-tiled", "--refine-control", "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    with Image.open(out) as im:
        assert im.size == (2 * size, 2 * size)
        record = json.loads(im.text["pegu"])
    family = generator_spec(model).family
    repo = next(k for k, v in CONTROLNETS.items() if v[0] == family)
    assert record["settings"]["controlnet"] == f"tile-{family}"
    assert record["choices"]["controlnet_source"] == f"hf://{repo}@main"
