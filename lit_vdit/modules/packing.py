"""What a training sample draws, for batches of one shape and packs of clips of several shapes (NaViT,
the data's ``pack_positions``) alike: its noise from its run position, and a pack's loss."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lit_vdit.diffusion import Objective
from lit_vdit.models.text import TextEmbedding


def sample_draws(
    objective: Objective, seed: int, x0: torch.Tensor | list[torch.Tensor], positions: list[int]
) -> tuple[torch.Tensor, torch.Tensor | list[torch.Tensor], torch.Tensor]:
    """Timesteps, noise and label / caption dropout draws (uniform in [0, 1)) of each sample of ``x0``
    (a batch, or a pack's list of clips), drawn from (seed, its position in the run) only: a clip
    gets the same whatever the number of processes, and after a resume."""
    device = x0[0].device
    generator = torch.Generator(device)
    timesteps, noise, uniform = [], [], []
    for clip, position in zip(x0, positions, strict=True):
        at_size = objective.at_size(clip[0].numel())  # a timestep shift by clip size
        generator.manual_seed((seed * 0x9E3779B97F4A7C15 + position) % 2**63)
        timesteps.append(at_size.sample_timesteps(1, device, generator))
        noise.append(torch.randn(clip.shape, generator=generator, device=device, dtype=clip.dtype))
        uniform.append(torch.rand(1, generator=generator, device=device))
    return torch.cat(timesteps), noise if isinstance(x0, list) else torch.stack(noise), torch.cat(uniform)


def packed_losses(
    objective: Objective,
    denoiser: nn.Module,
    x0: list[torch.Tensor],
    noise: list[torch.Tensor],
    t: torch.Tensor,
    y: torch.Tensor | None,
    text: TextEmbedding | None,
) -> torch.Tensor:
    """Per-clip losses (K,) of a pack of K clips, the denoiser run once over all of them as one
    sequence (a list in: :meth:`VideoDiT.forward_packed`); each equals its clip's loss run alone."""
    pairs = list(zip(x0, noise, strict=True))
    x_t = [objective.add_noise(c[None], e[None], t[i : i + 1])[0] for i, (c, e) in enumerate(pairs)]
    out = denoiser(x_t, objective.model_time(t), y, text)
    return torch.cat(
        [
            objective.output_loss(o[None], c[None], e[None], t[i : i + 1], xt[None])
            for i, (o, (c, e), xt) in enumerate(zip(out, pairs, x_t, strict=True))
        ]
    )


def pack_totals(costs: list[dict[str, Any]]) -> torch.Tensor:
    """(clips, tokens, training FLOPs, VAE encoding FLOPs) of a pack whose clips cost ``costs``
    (:meth:`DiffusionModule.costs_at` of each clip's shape), in float64 to be summed over processes."""
    keys = ("tokens_per_sample", "flops_train_step", "vae_encode_flops")
    return torch.tensor([len(costs), *(sum(c[k] for c in costs) for k in keys)], dtype=torch.float64)
