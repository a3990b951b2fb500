"""A1111's sampler × schedule type, held to k-diffusion 0.0.16 (the commit A1111 v1.10 pins,
launch_utils.py k_diffusion_commit_hash ab527a9) and A1111's own schedule rules: the sigma
sequence of every pair pegu runs, on SD 1.5's and SDXL's scheduler configs, and whole
denoising runs on a tiny SD 1.5 against k-diffusion's own samplers."""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from pegu.core.errors import BadInput
from pegu.core.settings import K_SAMPLERS, SCHEDULES, GenerateSettings, resolve_schedule, \
    sampler_name
from pegu.generate.samplers import make_scheduler


def _kdiffusion():
    """k-diffusion's sampling and external modules, without its package __init__ (which
    imports its training stack: clean-fid, wandb, ...)."""
    if "k_diffusion.external" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules.setdefault("k_diffusion", pkg)
    return (importlib.import_module("k_diffusion.sampling"),
            importlib.import_module("k_diffusion.external"))


K, E = _kdiffusion()

# the scheduler_config.json of runwayml/stable-diffusion-v1-5 (PNDM) and of
# stabilityai/stable-diffusion-xl-base-1.0 (Euler, "leading" spacing, steps offset 1)
SD15 = dict(_class_name="PNDMScheduler", beta_start=0.00085, beta_end=0.012,
            beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1,
            skip_prk_steps=True, set_alpha_to_one=False, clip_sample=False)
SDXL = dict(_class_name="EulerDiscreteScheduler", beta_start=0.00085, beta_end=0.012,
            beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1,
            timestep_spacing="leading", interpolation_type="linear",
            prediction_type="epsilon", use_karras_sigmas=False, sample_max_value=1.0,
            set_alpha_to_one=False, clip_sample=False)


def _acp():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


class _Model(torch.nn.Module):
    """What k-diffusion's CompVisDenoiser wraps: alphas_cumprod and apply_model."""

    def __init__(self, unet=None):
        super().__init__()
        self.alphas_cumprod = _acp()
        self.unet = unet

    def apply_model(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=cond).sample


def a1111_get_sigmas(sampler: str, schedule: str, steps: int, sdxl: bool):
    """KDiffusionSampler.get_sigmas of A1111 v1.10 with sd_schedulers.py's functions, on
    k-diffusion's own DiscreteSchedule (CompVisDenoiser), default options."""
    from scipy import stats

    discard = K_SAMPLERS[sampler][1]
    steps += 1 if discard else 0
    if schedule == "Automatic":
        schedule = {"Karras": "karras", "Exponential": "exponential"}.get(
            K_SAMPLERS[sampler][0])
    inner = E.CompVisDenoiser(_Model())
    lo, hi = inner.sigmas[0].item(), inner.sigmas[-1].item()
    n = steps
    if schedule in (None, "Uniform"):
        sig = inner.get_sigmas(n)
    elif schedule in ("karras", "Karras"):
        sig = K.get_sigmas_karras(n=n, sigma_min=lo, sigma_max=hi)
    elif schedule in ("exponential", "Exponential"):
        sig = K.get_sigmas_exponential(n=n, sigma_min=lo, sigma_max=hi)
    elif schedule == "Polyexponential":
        sig = K.get_sigmas_polyexponential(n=n, sigma_min=lo, sigma_max=hi, rho=1.0)
    elif schedule in ("SGM Uniform", "Normal"):
        start, end = inner.sigma_to_t(torch.tensor(hi)), inner.sigma_to_t(torch.tensor(lo))
        ts = torch.linspace(start, end, n + 1)[:-1] if schedule == "SGM Uniform" \
            else torch.linspace(start, end, n)
        sig = torch.FloatTensor([inner.t_to_sigma(t) for t in ts] + [0.0])
    elif schedule == "KL Optimal":
        a_min, a_max = torch.arctan(torch.tensor(lo)), torch.arctan(torch.tensor(hi))
        i = torch.arange(n + 1)
        sig = torch.tan(i / n * a_min + (1.0 - i / n) * a_max)
    elif schedule == "Align Your Steps":
        ays = ([14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]
               if sdxl else
               [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029])
        if n != len(ays):
            xs, ys = np.linspace(0, 1, len(ays)), np.log(ays[::-1])
            ays = np.exp(np.interp(np.linspace(0, 1, n), xs, ys))[::-1].copy()
            ays = np.append(ays, [0.0])
        else:
            ays.append(0.0)
        sig = torch.FloatTensor(ays)
    elif schedule == "Simple":
        ss = len(inner.sigmas) / n
        sig = torch.FloatTensor([float(inner.sigmas[-(1 + int(x * ss))]) for x in range(n)]
                                + [0.0])
    elif schedule == "DDIM":
        sigs, ss, x = [], max(len(inner.sigmas) // n, 1), 1
        while x < len(inner.sigmas):
            sigs.append(float(inner.sigmas[x]))
            x += ss
        sig = torch.FloatTensor(sigs[::-1] + [0.0])
    elif schedule == "Beta":
        ts = [stats.beta.ppf(x, 0.6, 0.6) for x in 1 - np.linspace(0, 1, n)]
        sig = torch.FloatTensor([lo + x * (hi - lo) for x in ts] + [0.0])
    else:
        raise AssertionError(schedule)
    if discard:
        sig = torch.cat([sig[:-2], sig[-1:]])
    return sig.double().numpy()


def _pegu_sigmas(sampler, schedule, steps, config, sdxl):
    """The sigmas pegu's diffusers scheduler steps through (second-order ones visit each
    twice; those repeats removed)."""
    import diffusers

    base_config = diffusers.EulerDiscreteScheduler.from_config(config).config \
        if sdxl else diffusers.PNDMScheduler.from_config(config).config
    sched = make_scheduler(sampler, base_config, seed=1, schedule=schedule, sdxl=sdxl)
    sched.set_timesteps(steps, device="cpu")
    return torch.unique_consecutive(sched.sigmas.double()).numpy(), sched


PAIRS = [(s, sch) for s in K_SAMPLERS for sch in SCHEDULES
         if not (sch == "KL Optimal" and s in ("Euler a", "Heun", "LMS", "DPM2", "DPM2 a",
                                                "DPM++ SDE"))]


@pytest.mark.parametrize("sdxl", [False, True], ids=["sd15", "sdxl"])
@pytest.mark.parametrize("sampler,schedule", PAIRS)
def test_every_pair_samples_at_a1111s_sigmas(sampler, schedule, sdxl):
    for steps in (1, 11, 30):  # one step; Align Your Steps' own 11; 30: DDIM's makes 31
        want = a1111_get_sigmas(sampler, schedule, steps, sdxl)
        got, _ = _pegu_sigmas(sampler, schedule, steps, SDXL if sdxl else SD15, sdxl)
        assert got.shape == want.shape, (steps, got, want)
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=str(steps))


def test_the_issues_figures():
    # A1111's SD 1.5 sigmas run from 14.6146 to 0.0292 (k-diffusion's CompVisDenoiser)
    got, _ = _pegu_sigmas("DPM++ 2M", "Uniform", 20, SD15, False)
    assert got[0] == pytest.approx(14.6146, abs=1e-4) and got[-2] == pytest.approx(0.0292, abs=1e-4)
    # SDXL's config ("leading") no longer leaks in: 14.61 first, not 11.03
    got, sched = _pegu_sigmas("Euler", None, 20, SDXL, True)
    assert got[0] == pytest.approx(14.6146, abs=1e-4)
    assert float(sched.init_noise_sigma) == pytest.approx(14.6146, abs=1e-4)  # x = noise·σ₀
    # DPM2 with Automatic: Karras, next-to-last sigma discarded (20 steps: 21 sigmas)
    got, _ = _pegu_sigmas("DPM2", "Automatic", 20, SD15, False)
    karras = K.get_sigmas_karras(21, 0.0291675, 14.614647).numpy()
    assert len(got) == 21 and got[-2] == pytest.approx(karras[-3], rel=1e-4)


def test_model_calls_at_k_diffusions_timesteps():
    """Euler and Heun call the model at k-diffusion's (fractional) timesteps."""
    inner = E.CompVisDenoiser(_Model())
    for sampler in ("Euler", "Heun", "Euler a"):
        sig, sched = _pegu_sigmas(sampler, "Karras", 9, SD15, False)
        want = inner.sigma_to_t(torch.from_numpy(sig[:-1]).float()).double().numpy()
        np.testing.assert_allclose(torch.unique_consecutive(sched.timesteps).numpy(), want,
                                   atol=2e-3)


def test_names_and_refusals():
    assert resolve_schedule("DPM++ 2M", "Automatic") == ("DPM++ 2M", "Karras")
    assert resolve_schedule("DPM++ 2M SDE", "Automatic") == ("DPM++ 2M SDE", "Exponential")
    assert resolve_schedule("DPM2 a", "Automatic") == ("DPM2 a", "Karras")
    assert resolve_schedule("Euler a", "Automatic") == ("Euler a", "Uniform")
    assert resolve_schedule("DPM++ 2M", None) == ("DPM++ 2M", "Uniform")  # before A1111 1.9
    assert resolve_schedule("DPM++ 2M SDE Heun Exponential", None) == \
        ("DPM++ 2M SDE Heun", "Exponential")
    assert resolve_schedule("DDIM", "Karras") == ("DDIM", None)  # A1111 ignores it
    assert sampler_name("DDIM", "Karras") == ("DDIM", None)
    assert sampler_name("DPM++ 2M Karras", "Automatic") == ("DPM++ 2M Karras", None)
    assert sampler_name("Euler a", "SGMUniform") == ("Euler a", "SGM Uniform")
    with pytest.raises(BadInput, match="use scheduler 'DPM\\+\\+ 2M' with schedule 'Exp"):
        GenerateSettings("x", scheduler="DPM++ 2M Karras", schedule="Exponential")
    with pytest.raises(BadInput, match="closest schedule for it is 'Karras'"):
        resolve_schedule("Heun", "KL Optimal")
    with pytest.raises(BadInput, match="Did you mean 'Align Your Steps'"):
        GenerateSettings("x", schedule="align your step")
    with pytest.raises(BadInput, match="closest pegu has is 'DPM\\+\\+ 2M SDE'"):
        GenerateSettings("x", scheduler="DPM++ 3M SDE")


def test_ddim_at_a1111s_timesteps():
    """A1111's DDIM (sd_samplers_timesteps.py): range(0, 1000, 1000 // steps) + 1, run from
    the last down to the second; 30 steps step by 33 from 991."""
    import diffusers

    config = diffusers.PNDMScheduler.from_config(SD15).config
    for steps, first, count in ((20, 951, 19), (30, 991, 30), (50, 981, 49)):
        sched = make_scheduler("DDIM", config, schedule="Karras")
        sched.set_timesteps(steps)
        ts = sched.timesteps.tolist()
        assert (ts[0], ts[-1], len(ts)) == (first, 1 + 1000 // steps, count)


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    import os

    from pegu.generate import load_generator

    os.environ["PEGU_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return load_generator("tiny-sd15")


RUNS = [("Euler", "Karras", "sample_euler"), ("Heun", "Exponential", "sample_heun"),
        ("LMS", "Uniform", "sample_lms"), ("DPM2", "Automatic", "sample_dpm_2"),
        ("DPM++ 2M", "Align Your Steps", "sample_dpmpp_2m"),
        ("Euler", "SGM Uniform", "sample_euler")]


@pytest.mark.parametrize("sampler,schedule,fn", RUNS)
def test_a_whole_run_matches_k_diffusion(sd15, sampler, schedule, fn):
    """The latents after a whole run equal those of k-diffusion's sampler on the same UNet,
    noise and conditioning, with A1111's sigmas and its CFG combination."""
    pipe, steps, cfg = sd15.pipe, 6, 5.0
    pos, neg = pipe.encode_prompt("a photo of a cat", "cpu", 1, True, "blurry")
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    pipe.scheduler = make_scheduler(sampler, sd15._scheduler_config, schedule=schedule)
    ours = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, num_inference_steps=steps,
                guidance_scale=cfg, width=64, height=64, latents=noise.clone(),
                output_type="latent").images

    inner = E.CompVisDenoiser(_Model(pipe.unet).float())

    def denoiser(x, sigma):  # A1111's CFGDenoiser: uncond + cfg·(cond − uncond)
        out = inner(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([pos, neg]))
        c, u = out.chunk(2)
        return u + cfg * (c - u)

    sig = torch.from_numpy(a1111_get_sigmas(sampler, schedule, steps, False)).float()
    with torch.no_grad():
        ref = getattr(K, fn)(denoiser, noise * sig[0], sig, disable=True)
    assert torch.isfinite(ours).all()
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=2e-3 * float(ref.abs().max()))


def _png(path, text):
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


# Infotexts as A1111 v1.10's create_infotext writes them (processing.py: Steps, Sampler,
# Schedule type, CFG scale, Seed, Size, Model hash, Model, Denoising strength, Hires ...),
# one per seed model under the file names its users load: Civitai's Realistic Vision V6.0 B1
# file, Stability's SDXL file and AutoV2 hash (registry.GENERATORS cites each).
SEED_PNGS = {
    "realistic-vision-v6": ("Steps: 25, Sampler: DPM++ 2M SDE, Schedule type: Automatic, "
                            "CFG scale: 5, Seed: 77, Size: 512x768, "
                            "Model: realisticVisionV60B1_v51VAE, Denoising strength: 0.4, "
                            "Hires upscale: 1.3, Hires steps: 10, Hires upscaler: R-ESRGAN 4x+",
                            "DPM++ 2M SDE", "Exponential", (664, 992), 10),
    "epicrealism": ("Steps: 30, Sampler: DPM2 a, Schedule type: Automatic, CFG scale: 7, "
                    "Seed: 5, Size: 512x512, Model: epiCRealism, Denoising strength: 0.3, "
                    "Hires resize: 1024x0, Hires upscaler: R-ESRGAN 4x+",
                    "DPM2 a", "Karras", (1024, 1024), 30),
    "cyberrealistic-v3": ("Steps: 20, Sampler: Euler a, Schedule type: Align Your Steps, "
                          "CFG scale: 7, Seed: 9, Size: 512x768, Model: cyberrealistic_v30",
                          "Euler a", "Align Your Steps", None, None),
    "sdxl-base": ("Steps: 40, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6, "
                  "Seed: 1, Size: 1024x1024, Model hash: 31e35c80fc, Model: sd_xl_base_1.0",
                  "DPM++ 2M", "Karras", None, None),
}


@pytest.mark.parametrize("model", SEED_PNGS)
def test_an_a1111_png_of_each_seed_model_reads_as_a1111_runs_it(model, tmp_path):
    from pegu.pipeline.recipe import read_settings

    text, sampler, schedule, hires, hires_steps = SEED_PNGS[model]
    s = read_settings(_png(tmp_path / "a.png", "a portrait photo\n" + text))
    g = s.generate
    assert s.model == model
    assert resolve_schedule(g.scheduler, g.schedule) == (sampler, schedule)
    assert (s.refine_size, s.refine_steps) == (hires, hires_steps)


def test_an_a1111_png_reruns_through_the_cli(tmp_path):
    """A DPM2 a + Automatic (Karras, penultimate sigma dropped) image with a hires pass,
    re-run from its PNG as a user would; what pegu saves says the same."""
    from PIL import Image

    from pegu.cli import main
    from pegu.pipeline.recipe import parse_parameters, read_settings

    src = _png(tmp_path / "a1111.png", "a portrait photo\nNegative prompt: blurry\nSteps: 3, "
               "Sampler: DPM2 a, Schedule type: Automatic, CFG scale: 6, Seed: 4, Size: 64x96, "
               "Model: realisticVisionV60B1_v51VAE, Denoising strength: 0.5, "
               "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: R-ESRGAN 4x+")
    out = tmp_path / "again.png"
    assert main(["generate", "--from", str(src), "--model", "tiny-sd15", "--offline",
                 "--out", str(out)]) == 0
    p = parse_parameters(Image.open(out).info["parameters"])
    assert (p["Sampler"], p["Schedule type"], p["Steps"], p["Hires steps"]) == \
        ("DPM2 a", "Automatic", "3", "2")
    again = read_settings(out)
    assert (again.generate.scheduler, again.generate.schedule) == ("DPM2 a", "Automatic")
    assert Image.open(out).size == (96, 144)
