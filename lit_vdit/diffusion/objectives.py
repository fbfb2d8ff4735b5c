"""Training objectives: Gaussian diffusion (epsilon or v prediction, learned sigma) and rectified flow.

An objective owns the forward (noising) process, the timestep distribution, the regression target,
the per-sample training loss, and the conversion of a model output back to (x0, epsilon) that the
samplers use. ``model_fn(x_t, model_time) -> output`` is any callable (a denoiser with its labels
bound, or a classifier-free-guided wrapper).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol, runtime_checkable

import torch

from lit_vdit.diffusion.schedules import make_betas

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class Objective(Protocol):
    """A training objective: noising process, timestep distribution, loss and the (x0, eps) view of a
    model output that samplers use. ``t`` is the objective's own time; ``model_time(t)`` what the
    denoiser sees. Implemented by :class:`GaussianDiffusion` and :class:`RectifiedFlow`.
    """

    learn_sigma: bool  # the model also outputs a variance (twice the channels)

    def at_size(self, positions: int) -> Objective:
        """The objective for clips of ``positions`` latent positions (T*H*W): itself, or with its
        resolution-dependent timestep shift resolved."""

    def sample_timesteps(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor: ...

    def validation_timesteps(self, k: int) -> torch.Tensor:
        """k fixed timesteps over the whole range: the low-variance validation loss."""

    def model_time(self, t: torch.Tensor) -> torch.Tensor: ...

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample training loss (B,)."""

    def output_loss(
        self, out: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample loss (B,) of the model's output ``out`` on ``x_t = add_noise(x0, noise, t)``: what
        :meth:`loss` computes once the model has run (a pack of clips runs it once for all)."""

    def predict_x0_eps(
        self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the batch."""
    return x.mean(dim=tuple(range(1, x.ndim)))


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] (a float64 table) broadcast to ``like`` (B, ...) and cast to ``like``'s dtype.

    Every coefficient is a table precomputed in float64 (square roots included), as in DiT, and
    rounded once here: a square root taken after the cast loses ~1e-4 relative precision at small t.
    """
    out = values.to(t.device)[t].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def normal_kl(
    mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor
) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise."""
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log p(x) of data in [-1, 1] quantised to 256 levels under a Gaussian (improved DDPM decoder)."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = torch.special.ndtr(inv_std * (centered + 1.0 / 255))
    cdf_minus = torch.special.ndtr(inv_std * (centered - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_minus).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_minus).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta)
    )
    return -log_probs


class GaussianDiffusion:
    """Discrete-time DDPM forward process with epsilon or v prediction.

    Args:
        prediction: "epsilon" (DDPM / DiT) or "v" (Salimans & Ho 2022).
        schedule: "linear" or "cosine" betas.
        num_timesteps: number of training timesteps T.
        learn_sigma: the model also outputs the variance interpolation ``v`` and is trained with the
            improved-DDPM hybrid loss ``L_simple + L_vlb`` (epsilon prediction only).
    """

    def __init__(
        self,
        prediction: Literal["epsilon", "v"] = "epsilon",
        schedule: Literal["linear", "cosine"] = "linear",
        num_timesteps: int = 1000,
        learn_sigma: bool = False,
    ) -> None:
        if prediction not in ("epsilon", "v"):
            raise ValueError(f"prediction must be 'epsilon' or 'v', got {prediction!r}")
        if learn_sigma and prediction != "epsilon":
            raise ValueError(
                "learn_sigma (improved-DDPM hybrid loss) is implemented for prediction='epsilon'"
            )
        self.prediction = prediction
        self.schedule = schedule
        self.learn_sigma = learn_sigma
        self.set_betas(make_betas(schedule, num_timesteps), torch.arange(num_timesteps))

    def set_betas(self, betas: torch.Tensor, timestep_map: torch.Tensor) -> None:
        """(Re)define the process from betas; ``timestep_map`` maps step index -> model time."""
        self.betas = betas
        self.timestep_map = timestep_map
        self.num_timesteps = len(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        self.sqrt_recip_alphas_cumprod = (1.0 / self.alphas_cumprod).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / self.alphas_cumprod - 1.0).sqrt()
        self.log_betas = torch.log(betas)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # The posterior variance is 0 at t=0: clip the log as improved DDPM does.
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * (1.0 - betas).sqrt() / (1.0 - self.alphas_cumprod)
        )
        # Fixed "large" variance (beta_t, with the posterior's at t=0) as DDPM uses for sampling.
        self.log_fixed_variance = torch.log(torch.cat([self.posterior_variance[1:2], betas[1:]]))

    def respaced(self, steps: int) -> GaussianDiffusion:
        """The same process on ``steps`` evenly spaced timesteps (for fast DDPM / DDIM sampling)."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"sampling steps must be in [1, {self.num_timesteps}], got {steps}")
        keep = torch.linspace(0, self.num_timesteps - 1, steps).round().long().unique()
        ab = self.alphas_cumprod[keep]
        betas = 1.0 - ab / torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
        out = object.__new__(GaussianDiffusion)
        out.prediction, out.schedule, out.learn_sigma = self.prediction, self.schedule, self.learn_sigma
        out.set_betas(betas, self.timestep_map[keep])
        return out

    # -- training --------------------------------------------------------------------------------
    def at_size(self, positions: int) -> Objective:
        return self  # its schedule is fixed (a shifted schedule is another ``schedule``)

    def sample_timesteps(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.randint(0, self.num_timesteps, (n,), device=device, generator=generator)

    def validation_timesteps(self, k: int) -> torch.Tensor:
        """k fixed timesteps spread over the whole range, for the low-variance validation loss."""
        return ((torch.arange(k) + 0.5) * self.num_timesteps / k).long()

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        return self.timestep_map.to(t.device)[t].float()

    def signal_noise(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t) and sqrt(1 - alpha_bar_t) broadcast to ``like``: x_t = signal x0 + noise eps."""
        signal = _gather(self.sqrt_alphas_cumprod, t, like)
        return signal, _gather(self.sqrt_one_minus_alphas_cumprod, t, like)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        signal, sigma = self.signal_noise(t, x0)
        return signal * x0 + sigma * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == "epsilon":
            return noise
        signal, sigma = self.signal_noise(t, x0)
        return signal * noise - sigma * x0

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Per-sample training loss (B,) at timesteps ``t`` with the given noise."""
        x_t = self.add_noise(x0, noise, t)
        return self.output_loss(model_fn(x_t, self.model_time(t)), x0, noise, t, x_t)

    def output_loss(
        self, out: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor
    ) -> torch.Tensor:
        prediction = out[:, : x0.shape[1]]
        loss = mean_flat((prediction - self.target(x0, noise, t)) ** 2)
        if self.learn_sigma:
            # The variance is learned through L_vlb only: the mean is frozen in this term (improved DDPM).
            frozen = torch.cat([prediction.detach(), out[:, x0.shape[1] :]], dim=1)
            loss = loss + self.vlb_terms(frozen, x0, x_t, t)
        return loss

    def vlb_terms(
        self, out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Variational bound term L_{t-1} in bits per dimension (decoder NLL at t=0)."""
        true_mean, true_logvar = self.q_posterior(x0, x_t, t)
        model_mean, model_logvar = self.p_mean_variance(out, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_logvar, model_mean, model_logvar)) / math.log(2.0)
        nll = mean_flat(discretized_gaussian_nll(x0, model_mean, 0.5 * model_logvar)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    # -- posterior and model distribution ----------------------------------------------------------
    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean = (
            _gather(self.posterior_mean_coef1, t, x_t) * x0 + _gather(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return mean, _gather(self.posterior_log_variance_clipped, t, x_t)

    def predict_x0_eps(
        self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert the prediction channels of a model output into (x0, epsilon) estimates."""
        pred = out[:, : x_t.shape[1]]
        if self.prediction == "epsilon":
            recip, recipm1 = (
                _gather(self.sqrt_recip_alphas_cumprod, t, x_t),
                _gather(self.sqrt_recipm1_alphas_cumprod, t, x_t),
            )
            return recip * x_t - recipm1 * pred, pred
        signal, sigma = self.signal_noise(t, x_t)
        return signal * x_t - sigma * pred, sigma * x_t + signal * pred

    def p_mean_variance(
        self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t); learned variance interpolates beta and beta-tilde."""
        x0, _ = self.predict_x0_eps(out, x_t, t)
        mean, min_log = self.q_posterior(x0, x_t, t)
        if self.learn_sigma:
            max_log = _gather(self.log_betas, t, x_t)
            frac = (out[:, x_t.shape[1] :] + 1) / 2
            return mean, frac * max_log + (1 - frac) * min_log
        return mean, _gather(self.log_fixed_variance, t, x_t)


class RectifiedFlow:
    """Rectified flow / flow matching: x_t = (1 - t) x0 + t eps, the model predicts v = eps - x0.

    Training times follow a logit-normal distribution (Esser et al. 2024, SD3); the model sees
    ``1000 * t`` so that the timestep embedder works on the same scale as for diffusion.

    Timestep shift (SD3, Open-Sora): every time (training, validation, sampling) is mapped by
    ``t -> s t / (1 + (s - 1) t)``, ``s > 1`` spending more of them at high noise, which larger clips
    need (their pixels are more redundant, so a noise level destroys less). ``s = shift``, times
    ``sqrt(positions / shift_base_size)`` when ``shift_base_size`` is given: the shift then follows
    each clip's latent positions T*H*W (SD3's sqrt(m / n) over resolution and, as Open-Sora, frames).
    """

    learn_sigma = False

    def __init__(
        self,
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        shift: float = 1.0,
        shift_base_size: int | None = None,
    ) -> None:
        if shift <= 0 or (shift_base_size is not None and shift_base_size <= 0):
            raise ValueError(
                f"timestep shift {shift} and shift_base_size {shift_base_size} must be positive (shift 1 and "
                f"no base: no shift)"
            )
        self.logit_mean = logit_mean
        self.logit_std = logit_std
        self.shift = float(shift)
        self.shift_base_size = shift_base_size

    def at_size(self, positions: int) -> Objective:
        if self.shift_base_size is None:
            return self
        shift = self.shift * math.sqrt(positions / self.shift_base_size)
        return RectifiedFlow(self.logit_mean, self.logit_std, shift)

    def shifted(self, t: torch.Tensor) -> torch.Tensor:
        if self.shift_base_size is not None:
            raise ValueError(
                "this RectifiedFlow's shift depends on the clip size (shift_base_size): take "
                "objective.at_size(T * H * W) of the clips first"
            )
        return t if self.shift == 1.0 else self.shift * t / (1 + (self.shift - 1) * t)

    def sample_timesteps(
        self, n: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        z = torch.randn(n, device=device, generator=generator)
        return self.shifted(torch.sigmoid(self.logit_mean + self.logit_std * z))

    def validation_timesteps(self, k: int) -> torch.Tensor:
        return self.shifted((torch.arange(k, dtype=torch.float32) + 0.5) / k)

    def sampling_times(self, steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """``steps + 1`` times of an ODE sampler, from 1 (noise) to 0 (data), uniform before the shift."""
        return self.shifted(torch.linspace(1.0, 0.0, steps + 1, device=device))

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        return 1000.0 * t.float()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x0.dtype).reshape(-1, *([1] * (x0.ndim - 1)))
        return (1 - t) * x0 + t * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise - x0

    def loss(self, model_fn: ModelFn, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_t = self.add_noise(x0, noise, t)
        return self.output_loss(model_fn(x_t, self.model_time(t)), x0, noise, t, x_t)

    def output_loss(
        self, out: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, x_t: torch.Tensor
    ) -> torch.Tensor:
        return mean_flat((out - self.target(x0, noise, t)) ** 2)

    def predict_x0_eps(
        self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.to(x_t.dtype).reshape(-1, *([1] * (x_t.ndim - 1)))
        return x_t - t * out, x_t + (1 - t) * out


def timestep_shift(objective: Objective, latent_shape: tuple[int, ...]) -> float | None:
    """The timestep shift a rectified flow applies to clips of ``latent_shape`` (C, T, H, W); None for
    an objective without one (Gaussian diffusion)."""
    if not isinstance(objective, RectifiedFlow):
        return None
    return objective.at_size(math.prod(latent_shape[1:])).shift
