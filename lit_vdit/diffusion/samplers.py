"""Samplers (DDPM, DDIM for Gaussian diffusion; Euler and Heun for rectified flow) and CFG.

Each sampler turns noise into a sample with ``sample(objective, model_fn, noise, generator)``;
``model_fn(x_t, model_time)`` is built by :func:`denoiser_fn` (optionally classifier-free guided).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from lit_vdit.diffusion.objectives import GaussianDiffusion, ModelFn, Objective, RectifiedFlow
from lit_vdit.models.text import TextEmbedding


def denoiser_fn(
    denoiser: nn.Module,
    y: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
    null_class: int | None = None,
    text: TextEmbedding | None = None,
    null_caption: bool = False,
) -> ModelFn:
    """Bind labels and / or captions to a denoiser; with ``guidance_scale != 1`` apply classifier-free
    guidance, the unconditional half with the null class and / or the null caption (``text.dropped()``).

    Guidance extrapolates the prediction channels from the unconditional towards the conditional
    output; learned-variance channels (if any) are taken from the conditional half, as in DiT.
    """
    call = (lambda x, t, yy, tt: denoiser(x, t, yy)) if text is None else denoiser
    if guidance_scale == 1.0 or (y is None and text is None):
        return lambda x, t: call(x, t, y, text)
    if y is not None and null_class is None:
        raise ValueError(
            "classifier-free guidance needs a model trained with label dropout (class_dropout_prob > 0)"
        )
    if text is not None and not null_caption:
        raise ValueError(
            "classifier-free guidance on text needs a model trained with caption dropout "
            "(caption_dropout_prob > 0)"
        )
    y_pair = torch.cat([y, torch.full_like(y, null_class)]) if y is not None else None
    text_pair = TextEmbedding.cat([text, text.dropped()]) if text is not None else None

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = call(torch.cat([x, x]), torch.cat([t, t]), y_pair, text_pair)
        cond, uncond = out.chunk(2)
        channels = x.shape[1]
        pred = uncond[:, :channels] + guidance_scale * (cond[:, :channels] - uncond[:, :channels])
        return torch.cat([pred, cond[:, channels:]], dim=1)

    return guided


@runtime_checkable
class Sampler(Protocol):
    """Turns noise into a sample in ``steps`` model evaluations (or steps) of ``model_fn``."""

    steps: int

    def sample(
        self,
        objective: Objective,
        model_fn: ModelFn,
        noise: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor: ...


class _ObjectiveSampler:
    """What every sampler shares: its number of steps and the check that the objective is the kind it
    integrates (``objective_kind``); :meth:`integrate` is the sampler itself."""

    objective_kind: type

    def __init__(self, steps: int = 50) -> None:
        self.steps = steps

    def sample(
        self,
        objective: Objective,
        model_fn: ModelFn,
        noise: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        if not isinstance(objective, self.objective_kind):
            other = (
                "EulerSampler/HeunSampler"
                if self.objective_kind is GaussianDiffusion
                else "DDPMSampler/DDIMSampler"
            )
            raise ValueError(
                f"{type(self).__name__} samples a {self.objective_kind.__name__} objective, but the model "
                f"was trained with {type(objective).__name__}: use {other}"
            )
        return self.integrate(objective, model_fn, noise, generator)

    def integrate(self, objective, model_fn: ModelFn, noise: torch.Tensor, generator) -> torch.Tensor:
        raise NotImplementedError


class DiffusionSampler(_ObjectiveSampler):
    """Iterates a Gaussian diffusion's ``steps`` respaced timesteps from noisiest to clean."""

    objective_kind = GaussianDiffusion

    def integrate(self, objective: GaussianDiffusion, model_fn, noise, generator) -> torch.Tensor:
        diffusion = objective.respaced(self.steps)
        x = noise
        for i in reversed(range(diffusion.num_timesteps)):
            t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            x = self.step(diffusion, model_fn(x, diffusion.model_time(t)), x, t, generator)
        return x

    def step(
        self,
        diffusion: GaussianDiffusion,
        out: torch.Tensor,
        x: torch.Tensor,
        t: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        raise NotImplementedError


class DDPMSampler(DiffusionSampler):
    """Ancestral sampling (Ho et al. 2020) on ``steps`` respaced timesteps; uses a learned variance."""

    def __init__(self, steps: int = 250) -> None:
        super().__init__(steps)

    def step(self, diffusion, out, x, t, generator):
        mean, logvar = diffusion.p_mean_variance(out, x, t)
        if int(t[0]) == 0:
            return mean
        return mean + torch.exp(0.5 * logvar) * torch.randn(x.shape, generator=generator).to(x)


class DDIMSampler(DiffusionSampler):
    """DDIM (Song et al. 2021); ``eta=0`` is deterministic, ``eta=1`` matches DDPM's variance."""

    def __init__(self, steps: int = 50, eta: float = 0.0) -> None:
        super().__init__(steps)
        self.eta = eta

    def step(self, diffusion, out, x, t, generator):
        i = int(t[0])
        x0, eps = diffusion.predict_x0_eps(out, x, t)
        ab, ab_prev = diffusion.alphas_cumprod[i].item(), diffusion.alphas_cumprod_prev[i].item()
        sigma = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)) ** 0.5
        x = ab_prev**0.5 * x0 + (1 - ab_prev - sigma**2) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator).to(x)
        return x


class EulerSampler(_ObjectiveSampler):
    """Euler integration of the flow ODE from t=1 (noise) to t=0 (data) in ``steps`` steps, uniform
    before the objective's timestep shift (:meth:`RectifiedFlow.sampling_times`)."""

    objective_kind = RectifiedFlow

    def integrate(self, objective: RectifiedFlow, model_fn, noise, generator) -> torch.Tensor:
        times = objective.sampling_times(self.steps, noise.device)
        x = noise
        for t_cur, t_next in zip(times[:-1], times[1:], strict=True):
            x = self.step(objective, model_fn, x, t_cur, t_next)
        return x

    @staticmethod
    def velocity(
        objective: RectifiedFlow, model_fn: ModelFn, x: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        return model_fn(x, objective.model_time(t.expand(x.shape[0])))

    def step(
        self, objective: RectifiedFlow, model_fn: ModelFn, x: torch.Tensor, t_cur, t_next
    ) -> torch.Tensor:
        return x + (t_next - t_cur) * self.velocity(objective, model_fn, x, t_cur)


class HeunSampler(EulerSampler):
    """Heun's second-order method (an Euler step corrected by the average slope); last step is Euler."""

    def step(
        self, objective: RectifiedFlow, model_fn: ModelFn, x: torch.Tensor, t_cur, t_next
    ) -> torch.Tensor:
        v_cur = self.velocity(objective, model_fn, x, t_cur)
        x_euler = x + (t_next - t_cur) * v_cur
        if t_next == 0:
            return x_euler
        v_next = self.velocity(objective, model_fn, x_euler, t_next)
        return x + (t_next - t_cur) * 0.5 * (v_cur + v_next)


def default_sampler(objective: Objective) -> Sampler:
    """DDIM-50 for Gaussian diffusion, Euler-50 for rectified flow."""
    return EulerSampler() if isinstance(objective, RectifiedFlow) else DDIMSampler()
