"""Collecting a grid into one tidy table: DIR/runs.csv, one row per run and evaluation point, with the
columns of :mod:`lit_vdit.schema`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from experiments.grid import resolve_key
from lit_vdit import schema
from lit_vdit.io import atomic_write_text


def collect(grid_dir: str | Path) -> pd.DataFrame:
    """Join every planned run's metrics.csv with its settings and costs; write DIR/runs.csv atomically."""
    grid_dir = Path(grid_dir)
    frames = []
    planned = grid_dir / "grid.json"
    # The grid's runs: those grid.json plans (a run left over from an earlier version of the spec stays
    # on disk but is not part of this grid), or every run folder when there is no plan.
    wanted = {r["run_id"] for r in json.loads(planned.read_text())["runs"]} if planned.is_file() else None
    for directory in sorted((grid_dir / "runs").glob("*/")):
        if wanted is not None and directory.name not in wanted:
            continue
        metrics, result = directory / "metrics.csv", directory / "result.json"
        if not metrics.is_file() or not result.is_file():
            continue
        run = json.loads((directory / "run.json").read_text())
        if run.get("trunk"):
            continue  # a cooldown grid's trunk: its steps are in every branch's rows
        info = json.loads(result.read_text())
        rows = pd.read_csv(metrics)
        if (directory / "video_metrics.csv").is_file():  # FVD / FID at some evaluation steps
            rows = rows.merge(pd.read_csv(directory / "video_metrics.csv"), on="step", how="left")
        identity = {
            "run_id": run["run_id"],
            "name": run["name"],
            "preset": run["overrides"].get(resolve_key("preset"), ""),
            "seed": run["overrides"].get(resolve_key("seed"), ""),
        }
        for position, column in enumerate(schema.RUN_IDENTITY):
            rows.insert(position, column.name, identity[column.name])
        for key in schema.names(schema.RUN_COSTS):
            rows[key] = info["costs"].get(key, 0)
        for key in schema.names(schema.RUN_SETTINGS):
            rows[key] = info.get(key, False if key == "finished" else "")
        for key, value in run["axes"].items():
            # IsoFLOP budgets go to `flop_budget`, the column the analysis groups IsoFLOP profiles by.
            rows["flop_budget" if key == "budget" else f"axis_{key.split('.')[-1]}"] = value
        posthoc = info.get("posthoc_ema")
        if posthoc:  # recorded by `lit-vdit posthoc-ema --record`: on the row of its step
            at = rows["step"] == posthoc["step"]
            rows.loc[at, "val_loss_posthoc_ema"] = posthoc["val_loss"]
            rows.loc[at, "posthoc_sigma_rel"] = posthoc["sigma_rel"]
        if run.get("start"):
            rows["branch_of"], rows["branch_step"] = run["start"]["trunk_id"], run["start"]["step"]
            started = info.get("started_from") or {}
            if started.get("step") == run["start"]["step"]:  # the trunk's FLOPs up to the branch point
                rows["flops_shared"] = started["flops_measured"]
            else:  # a run recorded before started_from: FLOPs per step were constant (one clip shape)
                final = info["final"]
                rows["flops_shared"] = final["flops_measured"] * run["start"]["step"] / final["step"]
        frames.append(rows)
    if not frames:
        raise FileNotFoundError(f"no finished or started runs with metrics under {grid_dir}/runs")
    table = pd.concat(frames, ignore_index=True)
    ordered = [name for name in schema.names(schema.RUNS) if name in table]  # then video metrics, axes
    table = table[ordered + [name for name in table if name not in ordered]]
    atomic_write_text(grid_dir / "runs.csv", table.to_csv(index=False))
    return table
