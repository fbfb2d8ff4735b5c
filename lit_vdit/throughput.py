"""Timing of training steps, shared by the benchmarks (``benchmarks/bench_train.py``, the U-Net vs DiT
benchmark): one definition of what a measured step is."""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from lit_vdit.diffusion import Objective, denoiser_fn
from lit_vdit.models.text import TextEmbedding


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a CUDA kernel is launched asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step_times(
    model: nn.Module,
    objective: Objective,
    x0: torch.Tensor,
    y: torch.Tensor | None,
    steps: int,
    autocast_dtype: torch.dtype | None = None,
    warmup: int = 2,
    text: TextEmbedding | None = None,
) -> list[float]:
    """Seconds of each of ``steps`` full training steps of ``model`` on the batch (x0, y, text): the
    objective's loss with fresh timesteps and noise, backward, fused AdamW step (as the runs'), after
    ``warmup`` untimed steps. ``autocast_dtype`` runs forward and loss under autocast (bf16-mixed)."""
    device = x0.device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        autocast = (
            torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        )
        with autocast:
            t = objective.at_size(x0[0, 0].numel()).sample_timesteps(len(x0), device)
            loss = objective.loss(denoiser_fn(model, y, text=text), x0, torch.randn_like(x0), t).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        synchronize(device)
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times
