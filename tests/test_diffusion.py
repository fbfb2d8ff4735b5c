import pytest
import torch

from lit_vdit.diffusion import (
    DDIMSampler,
    DDPMSampler,
    EulerSampler,
    GaussianDiffusion,
    HeunSampler,
    RectifiedFlow,
    denoiser_fn,
)
from lit_vdit.diffusion.schedules import cosine_betas, linear_betas

OBJECTIVES = [
    GaussianDiffusion("epsilon", "linear"),
    GaussianDiffusion("v", "cosine"),
    RectifiedFlow(),
]


def test_schedules_are_valid_and_noise_the_data_away():
    for betas in (linear_betas(1000), cosine_betas(1000)):
        assert torch.all((betas > 0) & (betas < 1))
        assert torch.cumprod(1 - betas, 0)[-1] < 1e-3


@pytest.mark.parametrize("objective", OBJECTIVES, ids=lambda o: getattr(o, "prediction", "flow"))
def test_loss_is_minimised_by_the_true_target(objective):
    torch.manual_seed(0)
    x0, noise = torch.randn(4, 3, 2, 4, 4), torch.randn(4, 3, 2, 4, 4)
    t = objective.sample_timesteps(4, torch.device("cpu"))
    target = objective.target(x0, noise, t)
    x_t = objective.add_noise(x0, noise, t)

    def oracle(shift: float):
        def fn(x, time):
            assert torch.allclose(x, x_t)
            return target + shift

        return fn

    losses = [objective.loss(oracle(s), x0, noise, t).mean().item() for s in (-0.1, 0.0, 0.1)]
    assert losses[1] == pytest.approx(0.0, abs=1e-10)
    assert losses[0] > 1e-3 and losses[2] > 1e-3
    # predict_x0_eps inverts the target
    x0_hat, eps_hat = objective.predict_x0_eps(target, x_t, t)
    assert torch.allclose(x0_hat, x0, atol=1e-4) and torch.allclose(eps_hat, noise, atol=1e-4)


def test_learned_sigma_vlb_is_minimised_by_the_true_posterior_variance():
    diffusion = GaussianDiffusion("epsilon", "linear", learn_sigma=True)
    x0, noise = torch.rand(3, 3, 1, 4, 4) * 2 - 1, torch.randn(3, 3, 1, 4, 4)
    t = torch.tensor([10, 200, 900])
    x_t = diffusion.add_noise(x0, noise, t)
    grid = torch.linspace(-1, 1, 41)
    vlb = torch.stack(
        [diffusion.vlb_terms(torch.cat([noise, torch.full_like(noise, v)], 1), x0, x_t, t) for v in grid]
    )  # (41, B)
    # The true posterior variance is the lower end of the interpolation (v = -1): the KL is zero there
    # and grows with v where beta and the posterior variance differ (early steps; late they coincide).
    assert torch.allclose(vlb[0], torch.zeros(3), atol=1e-5)
    assert torch.all(vlb[0] <= vlb.min(0).values + 1e-9)
    assert torch.all(vlb[1:, :2] >= vlb[:-1, :2]) and torch.all(vlb[-1, :2] > vlb[0, :2])
    # And the hybrid training loss reaches exactly that bound with the true epsilon.
    loss = diffusion.loss(lambda x, time: torch.cat([noise, -torch.ones_like(noise)], 1), x0, noise, t)
    assert torch.allclose(loss, torch.zeros(3), atol=1e-5)


def _perfect_denoiser(objective, data):
    """The exact model for a single-point data distribution at ``data``."""

    def fn(x_t, time):
        if isinstance(objective, RectifiedFlow):
            t = (time / 1000).reshape(-1, 1, 1, 1, 1)
            return (x_t - data) / t  # v = eps - x0 with eps = (x_t - (1 - t) x0) / t
        index = torch.searchsorted(objective.timestep_map, time.long())
        ab = objective.alphas_cumprod[index].float().reshape(-1, 1, 1, 1, 1)
        eps = (x_t - ab.sqrt() * data) / (1 - ab).sqrt()
        return eps if objective.prediction == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * data

    return fn


@pytest.mark.parametrize(
    "objective,sampler",
    [
        (GaussianDiffusion("epsilon"), DDPMSampler(steps=50)),
        (GaussianDiffusion("epsilon", "cosine"), DDIMSampler(steps=20)),
        (GaussianDiffusion("v", "cosine"), DDIMSampler(steps=20, eta=1.0)),
        (RectifiedFlow(), EulerSampler(steps=10)),
        (RectifiedFlow(), HeunSampler(steps=5)),
        (RectifiedFlow(shift=3.0), HeunSampler(steps=5)),
    ],
    ids=["ddpm", "ddim", "ddim-eta1-v", "euler", "heun", "heun-shifted"],
)
def test_samplers_turn_a_perfect_denoiser_into_the_data(objective, sampler):
    data = torch.rand(1, 3, 2, 4, 4) * 2 - 1
    noise = torch.randn(2, 3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    # Samplers respace the objective: the oracle must use the process the sampler runs.
    if isinstance(objective, GaussianDiffusion):
        steps_process = objective.respaced(sampler.steps)
        sample = sampler.sample(
            objective, _perfect_denoiser(steps_process, data), noise, torch.Generator().manual_seed(1)
        )
    else:
        sample = sampler.sample(objective, _perfect_denoiser(objective, data), noise)
    assert torch.allclose(sample, data.expand_as(sample), atol=1e-3)


def test_timestep_shift_moves_every_time_toward_noise_by_the_clip_size():
    flow = RectifiedFlow(shift=1.0, shift_base_size=256)  # SD3: s = sqrt(positions / base)
    assert flow.at_size(256).shift == 1.0 and flow.at_size(1024).shift == 2.0
    assert torch.allclose(
        RectifiedFlow(shift=3.0).shifted(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0, 0.75, 1])
    )
    large = flow.at_size(4096)  # s = 4: t = 0.5 -> 0.8
    times = large.sampling_times(8)
    assert times[0] == 1 and times[-1] == 0 and bool((times.diff() < 0).all())
    assert times[4] == pytest.approx(0.8)
    assert large.validation_timesteps(2)[0] > flow.at_size(256).validation_timesteps(2)[0]
    median = large.sample_timesteps(20_000, torch.device("cpu"), torch.Generator().manual_seed(0)).median()
    assert median == pytest.approx(0.8, abs=0.02)
    with pytest.raises(ValueError, match="at_size"):
        flow.sample_timesteps(2, torch.device("cpu"))
    with pytest.raises(ValueError, match="must be positive"):
        RectifiedFlow(shift=0.0)


def test_sampler_refuses_the_wrong_objective():
    with pytest.raises(ValueError, match="EulerSampler samples a RectifiedFlow"):
        EulerSampler().sample(GaussianDiffusion(), lambda x, t: x, torch.zeros(1, 3, 1, 2, 2))


def test_classifier_free_guidance_extrapolates_prediction_channels_only():
    def denoiser(x, t, y):
        cond = (y != 9).float().reshape(-1, 1, 1, 1, 1)
        return torch.cat([x + cond, torch.full_like(x, 0.5) + cond], dim=1)

    x = torch.zeros(2, 3, 1, 2, 2)
    out = denoiser_fn(denoiser, torch.tensor([1, 2]), guidance_scale=4.0, null_class=9)(x, torch.zeros(2))
    assert torch.allclose(out[:, :3], torch.full_like(x, 4.0))  # uncond 0 + 4 * (1 - 0)
    assert torch.allclose(out[:, 3:], torch.full_like(x, 1.5))  # conditional variance channels
    with pytest.raises(ValueError, match="label dropout"):
        denoiser_fn(denoiser, torch.tensor([1]), guidance_scale=2.0, null_class=None)


def test_float32_coefficients_are_float64_tables_rounded_once():
    """The noise coefficient at t=0 and the t=1 variational term in float32 match float64 to ~1e-7
    (square roots precomputed in float64, as facebookresearch/DiT does), not 1e-4."""
    diffusion = GaussianDiffusion(learn_sigma=True)
    t0 = torch.zeros(1, dtype=torch.long)
    noise_coef = diffusion.add_noise(torch.zeros(1, 1), torch.ones(1, 1), t0)
    exact = (1 - diffusion.alphas_cumprod[0]).sqrt()
    assert abs(float(noise_coef) / float(exact) - 1) < 1e-6
    torch.manual_seed(0)
    x0, out = torch.rand(4, 3, 2, 4, 4) * 2 - 1, torch.randn(4, 6, 2, 4, 4) * 0.5
    noise = torch.randn_like(x0)
    t1 = torch.ones(4, dtype=torch.long)
    x_t = diffusion.add_noise(x0, noise, t1)
    vlb32 = diffusion.vlb_terms(out, x0, x_t, t1)
    vlb64 = diffusion.vlb_terms(out.double(), x0.double(), x_t.double(), t1)
    assert torch.allclose(vlb32.double(), vlb64, rtol=1e-5, atol=0)
    x0_32 = diffusion.predict_x0_eps(out, x_t, t1)[0]
    x0_64 = diffusion.predict_x0_eps(out.double(), x_t.double(), t1)[0]
    assert torch.allclose(x0_32.double(), x0_64, rtol=1e-5)
