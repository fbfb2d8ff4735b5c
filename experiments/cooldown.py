"""Cooldown grids: one warmup-stable-decay trunk per size, one cooldown branch per data budget.

With a WSD schedule (:mod:`lit_vdit.modules.lr_schedules`) a run is a constant-rate run until its
cooldown starts, so the runs of one size at several step counts share that prefix (Hägele et al.
2024). A spec's ``cooldown`` section turns the grid's runs into, per group of runs that differ only in
their steps (a size's budgets, after ``isoflop``):

- a **trunk**: constant rate after warm-up, up to the latest cooldown start of its group, saving a
  checkpoint at every branch's start (:class:`lit_vdit.callbacks.BranchCheckpoints`);
- a **branch** per run: the WSD run of that length, resumed from the trunk's checkpoint at its
  cooldown start (:func:`~lit_vdit.modules.lr_schedules.wsd_decay_start`), which trains exactly as the
  same WSD run from step 0 would (same data order, optimizer and EMA state).

A branch's C and D are its own run's in full (its metrics include the trunk's steps); the study's
cost counts each trunk once (:func:`study_flops`). Warm-up is shared by a group: with an IsoFLOP
``warmup_fraction`` it is that fraction of the group's shortest run.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from experiments.grid import BranchPoint, GridSpecError, Run, resolve_key, run_name
from lit_vdit.modules.lr_schedules import DECAY_SHAPES, wsd_decay_start

BRANCH_CHECKPOINTS = "lit_vdit.callbacks.BranchCheckpoints"
APPEND_CALLBACKS = "trainer.callbacks+"  # LightningCLI: append to the trainer config's callbacks
_PER_RUN = {"steps", "warmup_steps", *(resolve_key(k) for k in ("steps", "warmup_steps"))}  # may differ
_PER_RUN_AXES = {"budget", *_PER_RUN}  # axes a trunk does not have


def _group_key(run: Run) -> str:
    shared = {k: v for k, v in run.overrides.items() if k not in _PER_RUN}
    return repr((sorted(run.files.items()), sorted(shared.items(), key=lambda kv: kv[0])))


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, list) else [value]


def apply_cooldown(
    spec: dict[str, Any], runs: list[Run], infos: list[dict[str, Any]]
) -> tuple[list[Run], list[dict[str, Any]]]:
    """Trunks and branches for a spec with ``cooldown: {fraction, shape}``; other specs unchanged.

    Returns the trunks first, then the branches, with their planning infos (a trunk's ``max_steps``
    is its own length, a branch's its full length)."""
    cooldown = spec.get("cooldown")
    if not cooldown:
        return runs, infos
    unknown = set(cooldown) - {"fraction", "shape"}
    if unknown:
        raise GridSpecError(f"cooldown: unknown key(s) {sorted(unknown)}; allowed: fraction, shape")
    fraction = float(cooldown.get("fraction", 0.2))
    shape = str(cooldown.get("shape", "1-sqrt"))
    if not 0 < fraction < 1:
        raise GridSpecError(f"cooldown.fraction must be in (0, 1), got {fraction}")
    if shape not in DECAY_SHAPES:
        raise GridSpecError(f"cooldown.shape must be one of {DECAY_SHAPES}, got {shape!r}")
    steps_key, warmup_key = resolve_key("steps"), resolve_key("warmup_steps")
    groups: dict[str, list[tuple[Run, dict[str, Any]]]] = {}
    for run, info in zip(runs, infos, strict=True):
        groups.setdefault(_group_key(run), []).append((run, info))
    trunks, branches = [], []
    for members in groups.values():
        members.sort(key=lambda member: member[1]["max_steps"])
        first_run, first_info = members[0]
        # the shortest run's warm-up (a config's own warm-up, when no override sets it, is the same for all)
        warmup = {warmup_key: first_run.overrides[warmup_key]} if warmup_key in first_run.overrides else {}
        starts = sorted({wsd_decay_start(info["max_steps"], fraction) for _, info in members})
        if first_info["warmup_steps"] > starts[0]:
            raise GridSpecError(
                f"cooldown: {first_run.name} warms up for {first_info['warmup_steps']} steps, past its "
                f"cooldown start at step {starts[0]}: lower the warm-up or cooldown.fraction, or add steps"
            )
        trunk_axes = {k: v for k, v in first_run.axes.items() if k not in _PER_RUN_AXES}
        saves = {"class_path": BRANCH_CHECKPOINTS, "init_args": {"steps": starts}}
        trunk = Run(
            f"{run_name(trunk_axes)}-trunk",
            first_run.files,
            {
                **first_run.overrides,
                steps_key: starts[-1],
                **warmup,
                "model.init_args.lr_schedule": "constant",
                APPEND_CALLBACKS: [*_as_list(first_run.overrides.get(APPEND_CALLBACKS)), saves],
            },
            trunk_axes,
            trunk=True,
        )
        trunks.append((trunk, {**first_info, "max_steps": starts[-1]}))
        for run, info in members:
            start = wsd_decay_start(info["max_steps"], fraction)
            overrides = {
                **run.overrides,
                **warmup,
                "model.init_args.lr_schedule": "wsd",
                "model.init_args.decay_fraction": fraction,
                "model.init_args.decay_shape": shape,
            }
            branch = Run(run.name, run.files, overrides, run.axes, start=BranchPoint(trunk.run_id, start))
            branches.append((branch, info))
    planned = trunks + branches
    return [run for run, _ in planned], [info for _, info in planned]


def study_flops(table: pd.DataFrame) -> dict[str, float]:
    """Training FLOPs of a collected grid (runs.csv): ``points`` sums every run's own C (as if each
    trained alone), ``trained`` counts the prefixes that branches share with their trunk once."""
    final = table.sort_values("step").groupby("run_id").tail(1)
    points = float(final["flops_measured"].sum())
    if "branch_of" not in final:
        return {"points": points, "trained": points}
    branches = final[final["branch_of"].notna() & (final["branch_of"] != "")]
    trunks = branches.groupby("branch_of")["flops_shared"].max()  # a trunk ends at its last branch's start
    return {"points": points, "trained": points - float(branches["flops_shared"].sum()) + float(trunks.sum())}
