"""Noise schedules, objectives and samplers: pure tensors in, tensors out (no Lightning)."""

from lit_vdit.diffusion.objectives import GaussianDiffusion, Objective, RectifiedFlow, timestep_shift
from lit_vdit.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    EulerSampler,
    HeunSampler,
    Sampler,
    default_sampler,
    denoiser_fn,
)

__all__ = [
    "DDIMSampler",
    "DDPMSampler",
    "EulerSampler",
    "GaussianDiffusion",
    "HeunSampler",
    "Objective",
    "RectifiedFlow",
    "Sampler",
    "default_sampler",
    "denoiser_fn",
    "timestep_shift",
]
