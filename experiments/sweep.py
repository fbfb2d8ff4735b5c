"""Hyperparameter sweeps in grids: learning rate x batch size at every (N, D) point.

A spec's ``hparams`` section turns each run of the grid (after ``isoflop``) into one run per learning
rate and batch size::

    hparams:
      lr: [3.0e-3, 6.0e-3, 1.2e-2, 2.4e-2]   # peak learning rates (or lr_scale: multipliers of each
                                             # run's own lr, e.g. [0.5, 1, 2, 4])
      batch_size: [8, 16]                    # per-process batch sizes (default: the run's own)
      adaptive: {rounds: 1, metric: val_loss_ema}

Steps follow the batch size so that each (N, D) point keeps its data (and so its compute) budget:
steps = round(steps_0 x B_0 / B), warm-up likewise. With ``adaptive``, once every run of a point has
finished, a point whose best learning rate (at a batch size) is the smallest or largest swept gets one
more learning rate past that edge, one grid step further, and, where three or more batch sizes were
swept, a point whose best run is at the smallest or largest batch size one more batch size (with the
learning rates swept there), up to ``rounds`` per edge; ``grid run`` runs them as they are planned.
The extension depends only on finished results, so a rerun plans the same runs and resumes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from experiments.grid import GridSpecError, Run, resolve_key, run_name
from experiments.runner import run_dir, run_state

LR, BATCH, STEPS, WARMUP = (resolve_key(k) for k in ("lr", "batch_size", "steps", "warmup_steps"))
SWEPT = ("lr", "batch_size")
ALLOWED = ("lr", "lr_scale", "batch_size", "adaptive")


def sweep_settings(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The checked ``hparams`` section, or None."""
    hp = spec.get("hparams")
    if not hp:
        return None
    unknown = set(hp) - set(ALLOWED)
    if unknown:
        raise GridSpecError(f"hparams: unknown key(s) {sorted(unknown)}; allowed: {', '.join(ALLOWED)}")
    if ("lr" in hp) == ("lr_scale" in hp):
        raise GridSpecError("hparams: give the learning rates as lr (peak values) or lr_scale (multipliers)")
    rates = hp.get("lr", hp.get("lr_scale"))
    if not isinstance(rates, list) or len(rates) < 3 or min(float(v) for v in rates) <= 0:
        raise GridSpecError(
            f"hparams.lr: 3 or more positive learning rates, for a quadratic optimum; got {rates}"
        )
    batches = hp.get("batch_size")
    if batches is not None and (not isinstance(batches, list) or min(int(b) for b in batches) < 1):
        raise GridSpecError(f"hparams.batch_size: a list of per-process batch sizes, got {batches!r}")
    if spec.get("cooldown"):
        raise GridSpecError(
            "hparams and cooldown: a cooldown grid shares one trunk per size; sweep without it"
        )
    adaptive = hp.get("adaptive") or {}
    unknown = set(adaptive) - {"rounds", "metric"}
    if unknown:
        raise GridSpecError(f"hparams.adaptive: unknown key(s) {sorted(unknown)}; allowed: rounds, metric")
    return {
        **hp,
        "adaptive": {
            "rounds": int(adaptive.get("rounds", 1)),
            "metric": adaptive.get("metric", "val_loss_ema"),
        }
        if hp.get("adaptive")
        else None,
    }


def _variant(run: Run, info: dict[str, Any], lr: float, batch: int, point: dict) -> tuple[Run, dict]:
    """``run`` at peak ``lr`` and per-process ``batch``, its steps scaled to keep its samples."""
    ratio = info["batch_size"] / batch
    steps = max(1, round(info["max_steps"] * ratio))
    overrides = {**run.overrides, LR: lr, BATCH: batch, STEPS: steps}
    warmup = info["warmup_steps"]
    if warmup:
        warmup = overrides[WARMUP] = max(1, round(warmup * ratio))
    axes = {**point, "lr": lr, "batch_size": batch}
    global_batch = info["global_batch"] * batch // info["batch_size"]
    new_info = {**info, "max_steps": steps, "warmup_steps": warmup, "batch_size": batch,
                "global_batch": global_batch, "peak_lr": lr}  # fmt: skip
    return Run(run_name(axes), run.files, overrides, axes), new_info


def apply_hparams(
    spec: dict[str, Any], runs: list[Run], infos: list[dict[str, Any]]
) -> tuple[list[Run], list[dict[str, Any]]]:
    """Every run at every swept learning rate and batch size; other specs unchanged."""
    hp = sweep_settings(spec)
    if hp is None:
        return runs, infos
    out_runs, out_infos = [], []
    for run, info in zip(runs, infos, strict=True):
        rates = hp["lr"] if "lr" in hp else [float(s) * info["peak_lr"] for s in hp["lr_scale"]]
        for batch in hp.get("batch_size") or [info["batch_size"]]:
            for lr in rates:
                r, i = _variant(run, info, float(lr), int(batch), run.axes)
                out_runs.append(r)
                out_infos.append({**i, "sweep": "grid"})
    return out_runs, out_infos


def _final_metric(grid_dir: Path, run: Run, metric: str) -> float | None:
    """The run's final ``metric``; inf for a failed run (diverged: worse than any), None while unfinished."""
    directory = run_dir(grid_dir, run)
    if run_state(directory) == "failed":
        return math.inf
    try:
        result = json.loads((directory / "result.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if not result.get("finished"):
        return None
    if metric not in result["final"]:
        raise GridSpecError(
            f"hparams.adaptive.metric {metric!r} is not in {run.name}'s results "
            f"(it has {', '.join(k for k in result['final'] if k.startswith('val_'))})"
        )
    value = result["final"][metric]
    return float(value) if value is not None and math.isfinite(float(value)) else math.inf


def _beyond(
    values: list[float], best: float, originals: set[float], rounds: int, ratio: float
) -> float | None:
    """The next value past ``best`` when it is the smallest or largest of ``values``, within ``rounds``
    values beyond the originals on that side."""
    values = sorted(values)
    if len(values) < 2 or best not in (values[0], values[-1]):
        return None
    low = best == values[0]
    outside = [v for v in values if (v < min(originals) if low else v > max(originals))]
    if len(outside) >= rounds:
        return None
    return best / ratio if low else best * ratio


def extend_sweep(
    spec: dict[str, Any], planned: list[tuple[Run, dict[str, Any]]], grid_dir: Path
) -> list[tuple[Run, dict[str, Any]]]:
    """The runs ``hparams.adaptive`` adds past the edges of finished points (none if not adaptive)."""
    hp = sweep_settings(spec)
    if hp is None or hp["adaptive"] is None:
        return []
    rounds, metric = hp["adaptive"]["rounds"], hp["adaptive"]["metric"]
    points: dict[str, list[tuple[Run, dict[str, Any]]]] = {}
    for run, info in planned:
        if "sweep" in info:
            point = run_name({k: v for k, v in run.axes.items() if k not in SWEPT})
            points.setdefault(point, []).append((run, info))
    existing = {run.run_id for run, _ in planned}
    added = []
    for members in points.values():
        results = [(_final_metric(grid_dir, run, metric), run, info) for run, info in members]
        if any(value is None for value, _, _ in results):
            continue  # a point is extended once all its runs have finished
        point = {k: v for k, v in members[0][0].axes.items() if k not in SWEPT}
        grid = [info for _, info in members if info["sweep"] == "grid"]
        new = []  # (lr, batch size, the run it is scaled from)
        for batch in sorted({info["batch_size"] for _, info in members}):
            at = [
                (value, info["peak_lr"], run, info)
                for value, run, info in results
                if info["batch_size"] == batch
            ]
            # an adaptive batch size has no grid runs of its own: the point's grid rates bound it
            originals = {info["peak_lr"] for info in grid if info["batch_size"] == batch} or {
                info["peak_lr"] for info in grid
            }
            ratio = math.exp(np.diff(np.log(sorted(originals))).mean())
            _, best_lr, run, info = min(at, key=lambda r: r[0])
            lr = _beyond([r for _, r, _, _ in at], best_lr, originals, rounds, ratio)
            if lr is not None:
                new.append((float(f"{lr:.6g}"), batch, run, info))
        originals = {info["batch_size"] for info in grid}
        if len(originals) > 2:  # of two batch sizes one is always best: an edge that says nothing
            _, _, best = min(results, key=lambda r: r[0])
            ratio = math.exp(np.diff(np.log(sorted(originals))).mean())
            batches = [info["batch_size"] for _, info in members]
            batch = _beyond(sorted(set(batches)), best["batch_size"], originals, rounds, ratio)
            if batch is not None and round(batch) >= 1:
                same = [
                    (info["peak_lr"], run, info)
                    for run, info in members
                    if info["batch_size"] == best["batch_size"]
                ]
                new += [
                    (lr, int(round(batch)), run, info) for lr, run, info in sorted(same, key=lambda m: m[0])
                ]
        for lr, batch, run, info in new:
            run, info = _variant(run, info, lr, batch, point)
            if run.run_id not in existing:
                existing.add(run.run_id)
                added.append((run, {**info, "sweep": "adaptive"}))
    return added
