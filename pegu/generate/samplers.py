"""A1111's sampler names as diffusers schedulers, every option stated."""
from __future__ import annotations

from ..core import compat
from ..core.settings import check_scheduler

# A1111 sampler -> diffusers scheduler class and options. Sources: diffusers' scheduler
# overview table (docs/source/en/api/schedulers/overview.md), except "DPM++ SDE", which is
# k-diffusion's sample_dpmpp_sde (A1111 modules/sd_samplers_kdiffusion.py) and whose diffusers
# port is DPMSolverSDEScheduler (the table's DPMSolverSinglestepScheduler is DPM++ 2S), and
# UniPC, built with A1111's order 3 and lower order final (modules/shared_options.py) but
# variant bh2: A1111's default bh1 gives NaN latents in diffusers' UniPC (tested), so pegu's
# UniPC matches A1111 with "UniPC variant: bh2".
SAMPLERS = {
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", dict(use_karras_sigmas=True)),
    "DPM++ 2M SDE": ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++")),
    "DPM++ 2M SDE Karras": ("DPMSolverMultistepScheduler",
                            dict(algorithm_type="sde-dpmsolver++", use_karras_sigmas=True)),
    "DPM++ SDE": ("DPMSolverSDEScheduler", {}),
    "DPM++ SDE Karras": ("DPMSolverSDEScheduler", dict(use_karras_sigmas=True)),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "Heun": ("HeunDiscreteScheduler", {}),
    "LMS": ("LMSDiscreteScheduler", {}),
    "LMS Karras": ("LMSDiscreteScheduler", dict(use_karras_sigmas=True)),
    "DPM2": ("KDPM2DiscreteScheduler", {}),
    "DPM2 Karras": ("KDPM2DiscreteScheduler", dict(use_karras_sigmas=True)),
    "DPM2 a": ("KDPM2AncestralDiscreteScheduler", {}),
    "DPM2 a Karras": ("KDPM2AncestralDiscreteScheduler", dict(use_karras_sigmas=True)),
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


def make_scheduler(name: str, config, seed: int | None = None):
    """A diffusers scheduler for an A1111 sampler name (see ``SAMPLERS`` and its sources).
    seed: the Brownian-tree noise of the SDE samplers (DPM++ SDE), so they repeat too."""
    import diffusers as d

    cls, kwargs = SAMPLERS[check_scheduler(name)]
    scheduler_cls = getattr(d, cls)
    # every schedule option stated: a model's or an earlier sampler's config never leaks in
    accepted = scheduler_cls._get_init_keys(scheduler_cls)
    stated = {k: v for k, v in dict(use_karras_sigmas=False, use_exponential_sigmas=False,
                                    use_beta_sigmas=False, algorithm_type="dpmsolver++",
                                    noise_sampler_seed=seed).items() if k in accepted}
    with compat.diffusers_quiet():  # the model's options another scheduler has no use for
        return scheduler_cls.from_config(config, **{**stated, **kwargs})


def seed_of(generator) -> int:
    """The seed of the first CPU ``torch.Generator`` of a call."""
    first = generator[0] if isinstance(generator, list) else generator
    return int(first.initial_seed())
