"""Planning a grid without training: N, D, C, an estimated wall time and peak memory per run; IsoFLOP
step counts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.cooldown import apply_cooldown
from experiments.grid import GridSpecError, Run, expand, resolve_key
from experiments.sweep import apply_hparams, extend_sweep
from lit_vdit.build import build_run
from lit_vdit.flops import matmul_flops_per_second, six_nd
from lit_vdit.memory import GIB, peak_training_bytes
from lit_vdit.parallel import sequence_degree, shards_weights

# Fraction of this machine's matmul FLOP/s that small training runs reach (measured on the demo
# ladder on a 2-core CPU); only used for the dry run's wall-time estimate.
ASSUMED_EFFICIENCY = 0.25
# Seconds per training step beyond its FLOPs (Lightning's loop, optimizer step, logging): what makes
# the smallest models of an IsoFLOP budget, with the most steps, its longest runs (demo on the 2-core
# CPU: T2 at 8e11 FLOPs, 1898 steps, 66 s; T5 at the same FLOPs, 173 steps, 22 s).
STEP_OVERHEAD_S = 0.025


def describe(run: Run) -> dict[str, Any]:
    """Build the run's parts from its config (no Trainer, no training) and measure its per-sample costs."""
    built = build_run(run.cli_args())
    nodes, devices, accelerator = built.shape
    return {
        **built.costs,
        "global_batch": built.global_batch,
        "batch_size": built.datamodule.batch_size,
        "peak_lr": float(built.module.hparams.lr),
        "precision": str(built.trainer.precision),
        "shards": built.world_size if shards_weights(built.trainer.strategy) else 1,
        "ema": float(built.module.hparams.get("ema_decay", 0.0)) > 0,
        "activation_checkpointing": bool(built.module.hparams.get("activation_checkpointing", False)),
        "sequence_parallel": sequence_degree(built.trainer.strategy),
        "max_steps": built.trainer.max_steps,
        "warmup_steps": int(built.module.hparams.get("warmup_steps", 0)),
        "train_clips": built.datamodule.train_size,
        "world_size": built.world_size,
        "num_nodes": nodes,
        "devices_per_node": devices,
        "accelerator": accelerator,
    }


def apply_isoflop(
    spec: dict[str, Any], runs: list[Run], infos: list[dict[str, Any]]
) -> tuple[list[Run], list[dict]]:
    """Chinchilla approach 2: for each budget C, each run's steps = C / (train FLOPs per step). Runs
    under ``min_steps`` or over ``max_steps`` are left out, so the window of sizes moves up with the
    budget; with ``warmup_fraction``, a run's warm-up steps are that fraction of its steps."""
    iso = spec.get("isoflop")
    if not iso:
        return runs, infos
    allowed = ("budgets", "min_steps", "max_steps", "warmup_fraction")
    unknown = set(iso) - set(allowed)
    if unknown:
        raise GridSpecError(f"isoflop: unknown key(s) {sorted(unknown)}; allowed: {', '.join(allowed)}")
    if not iso.get("budgets"):
        raise GridSpecError("isoflop.budgets: give a list of training-FLOP budgets, e.g. [1.0e12, 3.0e12]")
    min_steps = int(iso.get("min_steps", 10))
    max_steps = iso.get("max_steps")
    warmup = iso.get("warmup_fraction")
    if warmup is not None and not 0 <= float(warmup) < 1:
        raise GridSpecError(f"isoflop.warmup_fraction must be in [0, 1), got {warmup}")
    out_runs, out_infos = [], []
    for budget in iso["budgets"]:
        for run, info in zip(runs, infos, strict=True):
            steps = round(float(budget) / (info["flops_train_step"] * info["global_batch"]))
            if steps < min_steps:
                continue  # the model is too big to train for even min_steps at this budget
            if max_steps is not None and steps > int(max_steps):
                continue  # too small for this budget: far left of its optimum, and the longest run
            overrides = {**run.overrides, resolve_key("steps"): steps}
            run_warmup = info["warmup_steps"]
            if warmup is not None:  # each run warms up over the same fraction of its own length
                run_warmup = overrides[resolve_key("warmup_steps")] = max(1, round(float(warmup) * steps))
            axes = {**run.axes, "budget": float(budget)}
            out_runs.append(Run(f"{run.name}-C={float(budget):.2g}", run.files, overrides, axes))
            out_infos.append({**info, "max_steps": steps, "warmup_steps": run_warmup})
    if not out_runs:
        raise GridSpecError(
            f"isoflop: every run has fewer than min_steps={min_steps} steps; raise the budgets"
        )
    return out_runs, out_infos


def plan(spec: dict[str, Any], grid_dir: Path | None = None) -> list[tuple[Run, dict[str, Any]]]:
    """Runs with their N, D (samples, tokens), C (measured and 6ND) and an estimated wall time (of
    the steps it trains itself: a cooldown branch starts at its trunk's step). With ``grid_dir``, an
    adaptive sweep's runs past the edges of its finished points too (:func:`extend_sweep`)."""
    runs = expand(spec)
    infos = [describe(run) for run in runs]
    runs, infos = apply_isoflop(spec, runs, infos)
    runs, infos = apply_hparams(spec, runs, infos)
    runs, infos = apply_cooldown(spec, runs, infos)
    rate = ASSUMED_EFFICIENCY * matmul_flops_per_second(seconds=0.2)
    planned = [(run, _costs(run, info, rate)) for run, info in zip(runs, infos, strict=True)]
    while grid_dir is not None and (added := extend_sweep(spec, planned, grid_dir)):
        planned += [(run, _costs(run, info, rate)) for run, info in added]
    return planned


def _costs(run: Run, info: dict[str, Any], rate: float) -> dict[str, Any]:
    samples = info["max_steps"] * info["global_batch"]
    flops = samples * info["flops_train_step"]
    own = 1 - (run.start.step / info["max_steps"] if run.start is not None else 0)
    return {
        **info,
        "samples": samples,
        "tokens": samples * info["tokens_per_sample"],
        "flops": flops,
        "flops_6nd": six_nd(info["params_non_embedding"], samples * info["tokens_per_sample"]),
        "est_wall_s": math.ceil((flops / rate + info["max_steps"] * STEP_OVERHEAD_S) * own),
        "est_peak_gib": peak_training_bytes(
            info,
            info["batch_size"],
            shards=info["shards"],
            precision=info["precision"],
            ema=info["ema"],
            activation_checkpointing=info["activation_checkpointing"],
            sequence_parallel=info["sequence_parallel"],
        )
        / GIB,
    }
