"""Learning-rate schedules as a factor of the base rate per optimizer step: linear warm-up, then
constant, cosine, or warmup-stable-decay (WSD).

WSD (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations") holds the rate constant after warm-up and cools it down over the last ``decay_fraction``
of the run. Until its cooldown starts a WSD run is the same as a constant-rate run, so runs of
several lengths can share one constant-rate trunk and branch off it at
:func:`wsd_decay_start` (the grid's ``cooldown`` mode).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import torch

SCHEDULES = ("constant", "cosine", "wsd")
DECAY_SHAPES = ("linear", "1-sqrt", "cosine")


def wsd_decay_start(total_steps: int, decay_fraction: float) -> int:
    """The first step of a WSD run's cooldown: its last ``round(decay_fraction * total_steps)`` steps
    cool down."""
    return total_steps - round(decay_fraction * total_steps)


def check_schedule(
    schedule: str, warmup_steps: int, total_steps: int | None, decay_fraction: float, decay_shape: str
) -> None:
    """Raise a ValueError naming the setting when a schedule cannot run as configured;
    ``total_steps`` None (not known yet) checks the names and fractions only."""
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {SCHEDULES}, got {schedule!r}")
    if decay_shape not in DECAY_SHAPES:
        raise ValueError(f"decay_shape must be one of {DECAY_SHAPES}, got {decay_shape!r}")
    if not 0 < decay_fraction <= 1:
        raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction}")
    if schedule == "constant" or total_steps is None:
        return
    start = wsd_decay_start(total_steps, decay_fraction)
    if schedule == "wsd" and warmup_steps > start:
        raise ValueError(
            f"warmup_steps={warmup_steps} runs into the cooldown, which starts at step {start} of "
            f"{total_steps} (decay_fraction={decay_fraction}): shorten the warm-up or the cooldown"
        )


def _decay(shape: str, progress: float) -> float:
    """From 1 at progress 0 to 0 at progress 1."""
    if shape == "linear":
        return 1.0 - progress
    if shape == "1-sqrt":
        return 1.0 - math.sqrt(progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def lr_factor(
    step: int,
    schedule: str,
    warmup_steps: int,
    total_steps: int | None,
    min_lr_ratio: float,
    decay_fraction: float = 0.2,
    decay_shape: str = "1-sqrt",
) -> float:
    """Factor of the base learning rate for the update of optimizer step ``step`` (0-based).

    Warm-up rises linearly to 1 over ``warmup_steps``; cosine then decays to ``min_lr_ratio`` at
    ``total_steps``; WSD stays at 1 until :func:`wsd_decay_start` and cools down with ``decay_shape``
    to ``min_lr_ratio`` at its last update.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * _decay("cosine", progress)
    start = wsd_decay_start(total_steps, decay_fraction)
    if step < start:
        return 1.0
    progress = min(1.0, (step - start + 1) / (total_steps - start))
    return min_lr_ratio + (1 - min_lr_ratio) * _decay(decay_shape, progress)


def resume_schedules(lr_scheduler_configs: Sequence[Any]) -> None:
    """Set each optimiser's rate to what its LambdaLR schedule gives at its current step.

    A checkpoint holds the rate its own schedule set, and a cooldown branch resumes a constant-rate
    trunk's state into a WSD run (experiments.cooldown): its first update must already cool down.
    """
    for config in lr_scheduler_configs:
        scheduler = config.scheduler
        rates = [
            base * f(scheduler.last_epoch)
            for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
        ]
        for group, rate in zip(scheduler.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        scheduler._last_lr = rates


def lambda_schedule(
    optimizer: torch.optim.Optimizer,
    schedule: str,
    warmup_steps: int,
    total_steps: int | None,
    min_lr_ratio: float,
    decay_fraction: float,
    decay_shape: str,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's schedule as a per-step ``LambdaLR`` of every parameter group's own initial learning
    rate (muP's groups keep their multipliers); a decaying schedule needs ``total_steps``."""
    if schedule != "constant" and total_steps is None:
        raise ValueError(f"lr_schedule={schedule!r} needs trainer.max_steps to know where the decay ends")
    check_schedule(schedule, warmup_steps, total_steps, decay_fraction, decay_shape)
    factor = functools.partial(
        lr_factor,
        schedule=schedule,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        min_lr_ratio=min_lr_ratio,
        decay_fraction=decay_fraction,
        decay_shape=decay_shape,
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
