"""Training on packs: clips of several shapes in one sequence (NaViT), the data's ``pack_positions``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lit_vdit.diffusion import Objective
from lit_vdit.models.text import TextEmbedding


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
