"""The generator stage with tiny SD 1.5 / SDXL pipelines built in code, on the CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pegu.core.device import compile_supported, gpu_problem
from pegu.generate import choose_memory, load_generator, make_scheduler
from pegu.sources.kaggle import repo_folder as kaggle_model_dir
from pegu.core.registry import GENERATORS, generator_spec
from pegu.core.settings import SCHEDULERS, GenerateSettings

PROMPT = "a photo of a woman with curly red hair"


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    import os

    os.environ["PEGU_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return load_generator("tiny-sd15")


def pixels(image) -> np.ndarray:
    return np.asarray(image).astype(np.int64)


def test_equals_diffusers_itself(sd15):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    r = sd15.generate(GenerateSettings(PROMPT, seed=7, steps=3, negative_prompt="blurry"))
    assert r.image.size == (512, 512) and r.settings.scheduler == "DPM++ 2M Karras"
    folder = sd15.source.split(" (")[0]
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                   requires_safety_checker=False)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config,
                                                             use_karras_sigmas=True)
    # A1111 starts from noise · σ₀ (k-diffusion); in DPM-Solver's VP form, σ₀ / √(1 + σ₀²)
    pipe.scheduler.set_timesteps(3)
    sigma0 = float(pipe.scheduler.sigmas[0])  # 14.6146
    noise = torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(7))
    ref = pipe(PROMPT, negative_prompt="blurry", num_inference_steps=3, guidance_scale=5.0,
               latents=noise * sigma0 / (1 + sigma0**2) ** 0.5).images[0]
    d = np.abs(pixels(ref) - pixels(r.image))  # the scaling rounds apart in a few pixels
    assert d.max() <= 1 and d.mean() < 1e-3


def test_deterministic_across_loads_and_batches(sd15):
    s = GenerateSettings(PROMPT, seed=11, steps=2, width=256, height=192)
    first = sd15.generate(s, progress=False).image
    again = load_generator("tiny-sd15").generate(s, progress=False).image
    assert first.size == (256, 192) and np.array_equal(pixels(first), pixels(again))
    batch = sd15.generate(GenerateSettings(PROMPT, seed=11, steps=2, width=256, height=192,
                                           batch_size=3), progress=False)
    assert batch.seeds == [11, 12, 13]
    for i, image in enumerate(batch.images):
        single = sd15.generate(GenerateSettings(PROMPT, seed=11 + i, steps=2, width=256,
                                                height=192), progress=False).image
        # a batch runs the same maths in one pass; CPU kernels may round the last bit
        assert np.abs(pixels(image) - pixels(single)).max() <= 1
    assert not np.array_equal(pixels(batch.images[0]), pixels(batch.images[1]))


def test_records_what_it_used(sd15):
    r = sd15.generate(GenerateSettings(PROMPT, steps=1, scheduler="euler a"), progress=False)
    assert r.settings.scheduler == "Euler a" and r.settings.guidance == 5.0
    assert (r.dtype, r.memory, r.device) == ("fp32", "cpu", "cpu")
    assert r.settings.negative_prompt == "" and not r.vae_fp32_fallback and r.seconds > 0


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_runs(sd15, name):
    r = sd15.generate(GenerateSettings(PROMPT, steps=2, scheduler=name, width=128,
                                       height=128), progress=False)
    assert r.image.size == (128, 128) and not np.isnan(pixels(r.image)).any()


def test_scheduler_choice_does_not_leak_into_the_next_call(sd15):
    s = GenerateSettings(PROMPT, steps=3, width=128, height=128, seed=2)
    before = sd15.generate(s, progress=False).image
    sd15.generate(GenerateSettings(PROMPT, steps=1, width=64, height=64,
                                   scheduler="DPM++ 2M SDE"), progress=False)
    assert np.array_equal(pixels(sd15.generate(s, progress=False).image), pixels(before))


def test_schedulers_follow_diffusers_table(sd15):
    config = sd15.pipe.scheduler.config
    built = {name: make_scheduler(name, config, seed=1) for name in SCHEDULERS}
    assert type(built["DPM++ SDE Karras"]).__name__ == "DPMSolverSDEScheduler"  # k-diffusion's
    assert built["DPM++ SDE Karras"].config.use_karras_sigmas
    assert built["DPM++ SDE"].config.noise_sampler_seed == 1
    assert type(built["DPM++ 2M"]).__name__ == "DPMSolverMultistepScheduler"
    assert built["DPM++ 2M"].config.timestep_spacing == "linspace"  # never the model's
    assert built["DPM++ 2M SDE Karras"].config.algorithm_type == "sde-dpmsolver++"
    assert built["DPM++ 2M SDE Heun"].config.solver_type == "heun"
    assert built["DPM++ 2M SDE Karras"].config.use_karras_sigmas
    assert type(built["DPM2 a Karras"]).__name__ == "KDPM2AncestralDiscreteScheduler"
    assert (built["UniPC"].config.solver_type, built["UniPC"].config.solver_order) == ("bh2", 3)


def test_a1111_samplers_pegu_cannot_reproduce_are_refused_with_the_closest():
    from pegu.core.settings import sampler_name

    with pytest.raises(ValueError, match="closest pegu has is 'DPM\\+\\+ SDE Karras'"):
        GenerateSettings(PROMPT, scheduler="DPM++ 2S a Karras")
    with pytest.raises(ValueError, match="does not reproduce A1111's 'DPM\\+\\+ 3M SDE'"):
        GenerateSettings(PROMPT, scheduler="dpm++ 3m sde")
    # A1111 >= 1.9 writes the schedule apart; "Automatic" is the sampler's own default
    assert sampler_name("DPM++ 2M", "Karras") == ("DPM++ 2M", "Karras")
    assert sampler_name("DPM++ 2M", None) == ("DPM++ 2M", None)  # before 1.9: uniform
    assert sampler_name("UniPC", "Karras") == ("UniPC", None)  # A1111 ignores it for UniPC
    with pytest.raises(ValueError, match="unknown schedule type 'Align Your Step'"):
        sampler_name("Euler", "Align Your Step")


def test_the_sde_sampler_repeats_with_its_seed(sd15):
    s = GenerateSettings(PROMPT, steps=3, width=64, height=64, seed=3,
                         scheduler="DPM++ SDE Karras")
    first = pixels(sd15.generate(s, progress=False).image)
    assert np.array_equal(first, pixels(sd15.generate(s, progress=False).image))
    other = sd15.generate(GenerateSettings(PROMPT, steps=3, width=64, height=64, seed=4,
                                           scheduler="DPM++ SDE Karras"), progress=False)
    assert not np.array_equal(first, pixels(other.image))


def test_long_plain_prompt_warns_with_the_dropped_words(sd15):
    long = ", ".join(["portrait of a smiling old man with grey hair"] * 10) + ", zebra"
    with pytest.warns(UserWarning, match="CLIP reads 77; this part is dropped:.*zebra"):
        r = sd15.generate(GenerateSettings(long, steps=1, width=64, height=64,
                                           prompt_syntax="plain"), progress=False)
    assert "zebra" in r.warnings[0]


def test_fp16_vae_overflow_is_decoded_again_in_fp32(sd15, monkeypatch):
    """Make the VAE overflow once (as SDXL's does in fp16): NaNs are caught, the latents
    decoded again in fp32 and that recorded; a VAE that always fails raises."""
    vae = sd15.pipe.vae
    real = type(vae).decode
    calls = {"n": 0}

    def overflow_once(self, z, *a, **kw):
        calls["n"] += 1
        out = real(self, z, *a, **kw)
        if calls["n"] == 1:
            out[0][:] = float("nan")
        return out

    monkeypatch.setattr(type(vae), "decode", overflow_once)
    s = GenerateSettings(PROMPT, steps=2, width=128, height=128)
    r = sd15.generate(s, progress=False)
    assert r.vae_fp32_fallback and "NaN" in r.warnings[-1]
    monkeypatch.undo()
    clean = sd15.generate(s, progress=False)
    assert np.abs(pixels(r.image) - pixels(clean.image)).max() <= 1

    def always_nan(self, z, *a, **kw):
        out = real(self, z, *a, **kw)
        out[0][:] = float("nan")
        return out

    monkeypatch.setattr(type(vae), "decode", always_nan)
    with pytest.raises(FloatingPointError, match="NaN"):
        sd15.generate(s, progress=False)


def test_tiny_sdxl_runs_at_native_size():
    g = load_generator("tiny-sdxl")
    assert g.family == "sdxl" and g.native == 1024
    r = g.generate(GenerateSettings(PROMPT, steps=2), progress=False)
    assert r.image.size == (1024, 1024)
    r2 = g.generate(GenerateSettings(PROMPT, steps=2), progress=False)
    assert np.array_equal(pixels(r.image), pixels(r2.image))


def test_loads_a_diffusers_folder_and_a_kaggle_input(sd15, tmp_path, monkeypatch):
    folder = tmp_path / "my-model"
    sd15.pipe.save_pretrained(folder)
    g = load_generator(folder)
    assert g.name == "my-model" and g.native == 512 and g.source == str(folder)
    s = GenerateSettings(PROMPT, steps=2, width=128, height=128, guidance=5.0)
    assert np.array_equal(pixels(g.generate(s, progress=False).image),
                          pixels(sd15.generate(s, progress=False).image))
    kaggle = tmp_path / "input" / "realistic-vision" / "Realistic_Vision_V6.0_B1_noVAE"
    sd15.pipe.save_pretrained(kaggle)
    monkeypatch.setenv("PEGU_KAGGLE_INPUT", str(tmp_path / "input"))
    assert kaggle_model_dir("SG161222/Realistic_Vision_V6.0_B1_noVAE") == kaggle
    assert kaggle_model_dir("emilianJR/epiCRealism") is None


# ---- registry ----

def test_registry_has_the_four_models_and_the_tiny_ones():
    assert generator_spec("sdxl-base").repo == "stabilityai/stable-diffusion-xl-base-1.0"
    assert generator_spec("sdxl-base").vae == "madebyollin/sdxl-vae-fp16-fix"
    rv = generator_spec("SG161222/Realistic_Vision_V6.0_B1_noVAE")
    assert rv.name == "realistic-vision-v6" and rv.vae == "stabilityai/sd-vae-ft-mse"
    assert generator_spec("epicrealism").repo == "emilianJR/epiCRealism"
    assert generator_spec("cyberrealistic-v3").repo == "emilianJR/CyberRealistic_V3"
    for spec in GENERATORS.values():
        assert spec.native == (1024 if spec.family == "sdxl" else 512)
        assert spec.scheduler in SCHEDULERS
        assert "SMOKE TEST" in spec.description if spec.tiny else spec.repo
        for w, h in spec.sizes:  # every listed size is one the settings accept
            GenerateSettings("x", width=w, height=h)
    # the V6 card's sizes, and its published checkpoint names as A1111 writes them
    assert (896, 896) in rv.sizes and (640, 1152) in rv.sizes and "README" in rv.source
    assert generator_spec("Realistic_Vision_V6.0_NV_B1_fp16") is rv


def test_unknown_model_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="Did you mean 'epicrealism'"):
        load_generator("epicrealsim")
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_generator(tmp_path / "missing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        load_generator(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"cannot load emilianJR/epiCRealism: it is "
                       r"not in the Hugging Face cache \(.+\) nor under .+, and offline mode "
                       r"is on.*`hf download emilianJR/epiCRealism`.*Kaggle.*local folder"):
        load_generator("epicrealism")


def test_bad_settings_say_what_to_do():
    with pytest.raises(ValueError, match="multiple of 8, got 500; use 496 or 504"):
        GenerateSettings(PROMPT, height=500)
    for steps in (0, 1001, 10**9, True):  # bounded before any model loads
        with pytest.raises(ValueError, match="steps must be a whole number from 1 to 1000"):
            GenerateSettings(PROMPT, steps=steps)
    for guidance in (-1, float("inf"), float("nan"), 1e6):
        with pytest.raises(ValueError, match="guidance must be a number from 0 to 100"):
            GenerateSettings(PROMPT, guidance=guidance)
    with pytest.raises(ValueError, match="Did you mean 'Euler a'"):
        GenerateSettings(PROMPT, scheduler="Euler A2")
    with pytest.raises(ValueError, match="seed"):
        GenerateSettings(PROMPT, seed=-1)
    with pytest.raises(ValueError, match="unknown GenerateSettings fields"):
        GenerateSettings.from_dict({"prompt": "x", "cfg": 7})
    s = GenerateSettings(PROMPT, width=768, height=512, steps=20, guidance=6, seed=3)
    assert GenerateSettings.from_dict(s.to_dict()) == s


def test_same_settings_same_image_whatever_ran_before(sd15):
    """Tiled decoding for one large image must not stay on for the next, smaller one (576²:
    large enough that a tiled decode would change it, since the VAE tiles above 512²)."""
    small = GenerateSettings(PROMPT, steps=2, width=576, height=576)
    before = sd15.generate(small, progress=False)
    assert before.memory == "cpu" and not sd15.pipe.vae.use_tiling
    big = sd15.generate(GenerateSettings(PROMPT, steps=1, width=1088, height=1088),
                        progress=False)
    assert big.memory == "vae-tiling"
    after = sd15.generate(small, progress=False)
    assert after.memory == "cpu" and not sd15.pipe.vae.use_tiling
    assert np.array_equal(pixels(after.image), pixels(before.image))


def test_bad_load_options():
    with pytest.raises(ValueError, match="memory must be"):
        load_generator("tiny-sd15", memory="lots")
    with pytest.raises(ValueError, match="for GPUs"):
        load_generator("tiny-sd15", memory="model-offload")
    with pytest.raises(ValueError, match="fp16 on the CPU"):
        load_generator("tiny-sd15", dtype="fp16")


# ---- memory policy and GPU checks (simulated devices) ----

GB = 10**9


@pytest.mark.parametrize("family,size,vram,expected", [
    ("sd15", 512, 16 * GB, "none"),            # P100 16 GB
    ("sdxl", 1024, 16 * GB, "none"),
    ("sdxl", 2048, 16 * GB, "vae-tiling"),     # direct 2048² on a P100
    ("sd15", 2048, 15 * GB, "vae-tiling"),     # T4
    ("sdxl", 1024, 15 * GB, "none"),
    ("sd15", 512, 8 * GB, "none"),             # 8 GB card
    ("sdxl", 1024, 8 * GB, "model-offload"),
    ("sdxl", 2048, 8 * GB, "sequential-offload"),
    ("sdxl", 1024, None, "cpu"),
    ("sd15", 2048, None, "vae-tiling"),        # direct 2048² on the CPU: RAM is bounded too
])
def test_memory_policy_for_simulated_devices(family, size, vram, expected):
    device = "cpu" if vram is None else "cuda"
    assert choose_memory(family, size, size, 1, device, vram) == expected


def test_gpu_capability_check():
    cu128 = ["sm_70", "sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
    cu126 = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    problem = gpu_problem((6, 0), cu128, "2.9.1+cu128", "0.24.1+cu128")
    assert "sm_60" in problem and "pip install torch==2.9.1 torchvision==0.24.1 " \
        "--index-url https://download.pytorch.org/whl/cu126" in problem
    assert "T4 or L4" in problem
    assert gpu_problem((6, 0), cu126, "2.9.1+cu126") is None          # P100 + cu126
    assert gpu_problem((7, 5), cu128, "2.9.1+cu128") is None          # T4
    assert gpu_problem((8, 9), cu128, "2.9.1+cu128") is None          # L4 (sm_86 runs 8.9)
    assert gpu_problem((6, 1), ["sm_60", "compute_60"], "2.9.1") is None
    assert compile_supported((7, 5)) and not compile_supported((6, 0))


def test_loads_a_single_file_checkpoint_offline_with_a_local_config(sd15, tmp_path):
    from original_checkpoint import save_original_sd15

    ckpt = tmp_path / "tiny_sd15.safetensors"
    save_original_sd15(sd15.pipe, ckpt)
    with pytest.raises(ValueError, match="give config= a diffusers folder"):
        load_generator(ckpt)
    g = load_generator(ckpt, config=sd15.source.split(" (")[0])
    assert g.family == "sd15" and g.name == "tiny_sd15.safetensors"
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(sd15.pipe, name).state_dict(), getattr(g.pipe, name).state_dict()
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    s = GenerateSettings(PROMPT, steps=2, width=128, height=128, guidance=5.0)
    assert np.array_equal(pixels(g.generate(s, progress=False).image),
                          pixels(sd15.generate(s, progress=False).image))


def test_gpu_levers_keep_the_image():
    """channels_last UNet/VAE (applied on CUDA) changes speed, not the picture."""
    from pegu.generate.load import gpu_levers

    gen = load_generator("tiny-sd15")
    s = GenerateSettings(PROMPT, seed=3, steps=2)
    before = pixels(gen.generate(s).image)
    gpu_levers(gen.pipe)
    assert gen.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert np.abs(pixels(gen.generate(s).image) - before).max() <= 1
