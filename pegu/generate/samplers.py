"""A1111's sampler names as diffusers schedulers, every option stated."""
from __future__ import annotations

from ..core import compat
from ..core.settings import K_SAMPLERS, resolve_schedule

# A1111 sampler -> diffusers scheduler class and options. Sources: diffusers' scheduler
# overview table (docs/source/en/api/schedulers/overview.md), except "DPM++ SDE", which is
# k-diffusion's sample_dpmpp_sde (A1111 modules/sd_samplers_kdiffusion.py) and whose diffusers
# port is DPMSolverSDEScheduler (the table's DPMSolverSinglestepScheduler is DPM++ 2S), and
# UniPC, built with A1111's order 3 and lower order final (modules/shared_options.py) but
# variant bh2: A1111's default bh1 gives NaN latents in diffusers' UniPC (tested), so pegu's
# UniPC matches A1111 with "UniPC variant: bh2".
SAMPLERS = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++")),
    # k-diffusion's sample_dpmpp_2m_sde(solver_type="heun"); diffusers' solver_type "heun"
    "DPM++ 2M SDE Heun": ("DPMSolverMultistepScheduler",
                          dict(algorithm_type="sde-dpmsolver++", solver_type="heun")),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler",
              dict(solver_type="bh2", solver_order=3, lower_order_final=True)),
    # the distillations' samplers, as their cards build them (registry.DISTILLATIONS):
    # LCMScheduler (LCM-LoRA, DMD2), TCDScheduler (Hyper-SD's alternative), Euler and DDIM
    # with trailing timesteps (SDXL-Lightning; Hyper-SD). "SGM Uniform" is A1111's and
    # ComfyUI's name for Euler's trailing schedule.
    "LCM": ("LCMScheduler", {}),
    "TCD": ("TCDScheduler", {}),
    "Euler SGM Uniform": ("EulerDiscreteScheduler", dict(timestep_spacing="trailing")),
    "DDIM Trailing": ("DDIMScheduler", dict(timestep_spacing="trailing")),
}
# Align Your Steps' 10-step sigmas as A1111 has them (modules/sd_schedulers.py, from
# research.nvidia.com/labs/toronto-ai/AlignYourSteps/howto.html)
_AYS = {False: (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
        True: (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)}


def _sigma_to_t(acp, sigma):
    """k-diffusion's DiscreteSchedule.sigma_to_t: a sigma's fractional training timestep,
    linear in log sigma between the training timesteps' sigmas."""
    import numpy as np

    log = np.log(((1 - acp) / acp) ** 0.5)
    return np.interp(np.log(sigma), log, np.arange(len(log)))


def a1111_sigmas(schedule: str, steps: int, alphas_cumprod, sdxl: bool = False,
                 discard_penultimate: bool = False):
    """The sigmas A1111 samples ``steps`` steps at with a k-diffusion sampler and the
    ``schedule`` (SCHEDULES, resolved: never "Automatic"), for a model trained on
    ``alphas_cumprod``; 0 last, except KL Optimal's. Rules: A1111 v1.10 sd_schedulers.py and
    KDiffusionSampler.get_sigmas; k-diffusion 0.0.16 (the commit A1111 pins) get_sigmas_*
    and DiscreteSchedule; tested against both (tests/test_schedules.py)."""
    import numpy as np

    acp = np.asarray(alphas_cumprod, dtype=np.float64)
    model = ((1 - acp) / acp) ** 0.5  # k-diffusion's sigmas of the training timesteps
    log = np.log(model)
    lo, hi = model[0], model[-1]
    n = steps + int(discard_penultimate)  # A1111 asks one more and drops it

    def t_to_sigma(t):  # log-linear between the training timesteps, as k-diffusion
        t = np.asarray(t, dtype=np.float64)
        low = np.floor(t).astype(int)
        w = t - low
        return np.exp((1 - w) * log[low] + w * log[np.ceil(t).astype(int)])

    if schedule == "Uniform":
        sig = t_to_sigma(np.linspace(len(model) - 1, 0, n))
    elif schedule == "Karras":  # rho 7
        ramp = np.linspace(0, 1, n)
        sig = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    elif schedule in ("Exponential", "Polyexponential"):  # polyexponential's rho is 1
        sig = np.exp(np.linspace(np.log(hi), np.log(lo), n))
    elif schedule in ("SGM Uniform", "Normal"):
        t = np.linspace(_sigma_to_t(acp, hi), _sigma_to_t(acp, lo),
                        n + (schedule == "SGM Uniform"))
        sig = t_to_sigma(t[:n])
    elif schedule == "KL Optimal":
        i = np.arange(n + 1) / n
        return np.tan(i * np.arctan(lo) + (1 - i) * np.arctan(hi))
    elif schedule == "Align Your Steps":
        sig = np.array(_AYS[sdxl])
        if n != len(sig):
            x = np.linspace(0, 1, len(sig))
            sig = np.exp(np.interp(np.linspace(0, 1, n), x, np.log(sig[::-1])))[::-1]
    elif schedule == "Simple":
        sig = np.array([model[-(1 + int(x * len(model) / n))] for x in range(n)])
    elif schedule == "DDIM":
        sig = model[1::max(len(model) // n, 1)][::-1]
    elif schedule == "Beta":  # A1111's default alpha = beta = 0.6
        from scipy import stats

        x = stats.beta.ppf(1 - np.linspace(0, 1, n), 0.6, 0.6)
        sig = lo + x * (hi - lo)
    else:
        raise ValueError(f"not a resolved A1111 schedule: {schedule!r}")
    sig = np.append(sig, 0.0)
    return np.concatenate([sig[:-2], sig[-1:]]) if discard_penultimate else sig


def _a1111_timesteps(scheduler, steps: int):
    """A1111's DDIM timesteps (sd_samplers_timesteps.py): range(0, 1000, 1000 // steps) + 1,
    run from the last to the second (the first only ends the last step)."""
    import numpy as np
    import torch

    t = np.clip(np.arange(0, 1000, 1000 // steps) + 1, 0, 999)[1:][::-1].copy()
    scheduler.timesteps = torch.from_numpy(t).to(scheduler.timesteps.device)


def _install(scheduler, schedule: str | None, discard: bool, sdxl: bool, ddim: bool):
    """Make ``scheduler`` sample at A1111's sigmas: the schedulers that take Karras sigmas
    take A1111's through that hook (each then derives its own timesteps and step sizes);
    Euler a, which has none, has its sigmas set after its own."""
    import numpy as np
    import torch

    acp = scheduler.alphas_cumprod.double().numpy()
    plain = scheduler.set_timesteps
    karras = "use_karras_sigmas" in type(scheduler)._get_init_keys(type(scheduler))

    def sigmas(n):
        sig = a1111_sigmas(schedule, n, acp, sdxl, discard)
        return sig[:-1]  # the scheduler appends the last (0, or KL Optimal's sigma_min)

    def set_timesteps(num_inference_steps=None, device=None, **kw):
        plain(num_inference_steps, device=device, **kw)
        if ddim:
            _a1111_timesteps(scheduler, num_inference_steps)
        elif not karras:
            sig = a1111_sigmas(schedule, num_inference_steps, acp, sdxl, discard)
            t = _sigma_to_t(acp, sig[:-1])
            scheduler.sigmas = torch.from_numpy(sig.astype(np.float32))
            scheduler.timesteps = torch.from_numpy(t.astype(np.float32)).to(device)
            scheduler.num_inference_steps = len(t)

    def set_timesteps_vp(num_inference_steps=None, device=None, **kw):
        plain(num_inference_steps, device=device, **kw)
        # DPM-Solver starts from noise of variance 1 (its VP form); A1111 from noise · σ₀,
        # which is noise · σ₀ / √(1 + σ₀²) in that form
        first = float(scheduler.sigmas[0])
        scheduler.init_noise_sigma = first / (1 + first ** 2) ** 0.5

    if ddim or not karras:
        scheduler.set_timesteps = set_timesteps
    else:
        if not isinstance(getattr(type(scheduler), "init_noise_sigma", None), property):
            scheduler.set_timesteps = set_timesteps_vp
        scheduler._convert_to_karras = lambda in_sigmas, num_inference_steps=None: sigmas(
            num_inference_steps or scheduler.num_inference_steps)


def make_scheduler(name: str, config, seed: int | None = None, schedule: str | None = None,
                   sdxl: bool = False):
    """A diffusers scheduler for an A1111 sampler name and schedule type (see ``SAMPLERS``,
    ``settings.resolve_schedule`` and their sources). The k-diffusion samplers sample at
    A1111's sigmas (``a1111_sigmas``) and DDIM at A1111's timesteps, whatever the model's
    scheduler config says. seed: the Brownian-tree noise of the SDE samplers (DPM++ SDE).
    sdxl: the model is SDXL (Align Your Steps has sigmas for each)."""
    import diffusers as d

    base, resolved = resolve_schedule(name, schedule)
    cls, kwargs = SAMPLERS[base]
    scheduler_cls = getattr(d, cls)
    # every schedule option stated: a model's or an earlier sampler's config never leaks in
    accepted = scheduler_cls._get_init_keys(scheduler_cls)
    stated = dict(use_karras_sigmas=resolved is not None, use_exponential_sigmas=False,
                  use_beta_sigmas=False, algorithm_type="dpmsolver++", solver_type="midpoint",
                  noise_sampler_seed=seed, final_sigmas_type="sigma_min"
                  if resolved == "KL Optimal" else "zero")
    if resolved is not None:  # the k-diffusion samplers: start at the largest sigma
        stated["timestep_spacing"] = "linspace"
    stated = {k: v for k, v in stated.items() if k in accepted}
    with compat.diffusers_quiet():  # the model's options another scheduler has no use for
        scheduler = scheduler_cls.from_config(config, **{**stated, **kwargs})
    if resolved is not None or base == "DDIM":
        _install(scheduler, resolved, K_SAMPLERS[base][1] if resolved else False, sdxl,
                 ddim=base == "DDIM")
    return scheduler


def seed_of(generator) -> int:
    """The seed of the first CPU ``torch.Generator`` of a call."""
    first = generator[0] if isinstance(generator, list) else generator
    return int(first.initial_seed())
