"""Hyperparameter sweeps in grids: expansion at a kept data budget, adaptive edges, a real sweep fitted."""

import json

import pandas as pd
import pytest
from test_grid import write_spec

from analysis.cli import main as analysis_main
from experiments.cli import run_grid
from experiments.grid import GridSpecError, load_spec
from experiments.plan import plan
from experiments.runner import run_dir
from experiments.sweep import extend_sweep


def sweep_spec(tmp_path, repo_root, **hparams):
    return write_spec(
        tmp_path,
        repo_root,
        {"preset": ["T0", "T1"]},
        hparams={"lr": [1e-3, 4e-3, 1.6e-2], "batch_size": [2, 4], **hparams},
    )


def test_every_point_sweeps_lr_and_batch_size_at_its_data_budget(tmp_path, repo_root):
    planned = plan(load_spec(sweep_spec(tmp_path, repo_root)))
    assert len(planned) == 2 * 3 * 2 and len({run.run_id for run, _ in planned}) == 12
    for run, info in planned:
        assert run.overrides["model.init_args.lr"] == run.axes["lr"] == info["peak_lr"]
        assert run.overrides["data.init_args.batch_size"] == run.axes["batch_size"]
        assert info["samples"] == 12 * 4  # steps x batch kept: 24 steps at batch 2, 12 at batch 4
        assert info["max_steps"] == 48 // info["global_batch"]


def test_bad_sweeps_name_the_problem(tmp_path, repo_root):
    with pytest.raises(GridSpecError, match="3 or more positive learning rates"):
        plan(load_spec(sweep_spec(tmp_path, repo_root, lr=[1e-3, 2e-3])))
    with pytest.raises(GridSpecError, match="lr .peak values. or lr_scale"):
        plan(load_spec(sweep_spec(tmp_path, repo_root, lr_scale=[0.5, 1, 2])))
    with pytest.raises(GridSpecError, match="unknown key"):
        plan(load_spec(sweep_spec(tmp_path, repo_root, momentum=[0.9])))


def finish(grid_dir, run, loss):
    path = run_dir(grid_dir, run) / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"finished": True, "final": {"val_loss_ema": loss}}))


def test_adaptive_adds_a_learning_rate_past_an_edge_optimum_once_per_round(tmp_path, repo_root):
    spec = load_spec(sweep_spec(tmp_path, repo_root, batch_size=[2, 4, 8], adaptive={"rounds": 1}))
    planned = plan(spec)
    assert extend_sweep(spec, planned, tmp_path) == []  # nothing finished: nothing to extend
    for run, info in planned:  # T0's loss falls with lr (best at the top edge), T1's optimum is inside
        if run.axes["preset"] == "T0":
            loss = 1 / info["peak_lr"] + (0 if info["batch_size"] == 4 else 0.1)
        else:
            loss = abs(info["peak_lr"] - 4e-3) + (0 if info["batch_size"] == 2 else 0.1)
        finish(tmp_path, run, loss)
    added = extend_sweep(spec, planned, tmp_path)
    got = sorted((r.axes["preset"], r.axes["lr"], r.axes["batch_size"]) for r, _ in added)
    # T0: lr 6.4e-2 at every batch size (its optimum is the top edge); T1's best run is at the smallest
    # batch size: one size below (1) at each of its learning rates.
    assert got == [
        ("T0", 0.064, 2),
        ("T0", 0.064, 4),
        ("T0", 0.064, 8),
        *(("T1", lr, 1) for lr in (1e-3, 4e-3, 1.6e-2)),
    ]
    assert all(info["samples"] == 48 and info["sweep"] == "adaptive" for _, info in added)
    for run, _ in added:
        if run.axes["preset"] == "T0":  # T0's new lr is best again: past the one round it may add
            finish(tmp_path, run, 0.0 if run.axes["batch_size"] == 4 else 0.1)
        else:  # T1 at batch size 1: worse than at 2, its optimum inside
            finish(tmp_path, run, 1 + abs(run.axes["lr"] - 4e-3))
    assert extend_sweep(spec, planned + added, tmp_path) == []  # rounds: 1 per edge
    assert len(plan(spec, tmp_path)) == 18 + 6  # a replan (a rerun) plans the same runs


def test_a_sweep_grid_runs_and_its_table_fits(tmp_path, repo_root):
    path = write_spec(
        tmp_path,
        repo_root,
        {"preset": ["T0"]},
        hparams={"lr": [1e-3, 4e-3, 1.6e-2, 6.4e-2], "batch_size": [4]},
    )
    out = tmp_path / "grid"
    assert run_grid(path, out, plan(load_spec(path))) == []
    table = pd.read_csv(out / "runs.csv")
    final = table.groupby("run_id").last()
    assert sorted(final["peak_lr"]) == [1e-3, 4e-3, 1.6e-2, 6.4e-2] and set(final["global_batch"]) == {4}
    assert set(final["axis_lr"]) == set(final["peak_lr"])
    args = ["hparams", str(out / "runs.csv"), "--y", "val_loss_raw", "--bootstrap", "20", "--json"]
    assert analysis_main(args) == 0


def test_the_hparams_demo_plans_4_sizes_x_4_learning_rates_x_2_batch_sizes_at_one_data_budget(repo_root):
    planned = plan(load_spec(f"{repo_root}/experiments/hparams_demo.yaml"))
    assert len(planned) == 32 and {info["samples"] for _, info in planned} == {3200}
    assert {(run.axes["preset"], run.axes["batch_size"], info["max_steps"]) for run, info in planned} == {
        (p, b, 3200 // b) for p in ("T2", "T3", "T4", "T5") for b in (8, 16)
    }


def test_a_failed_run_counts_as_the_worst_and_its_point_still_extends(tmp_path, repo_root):
    path = write_spec(
        tmp_path,
        repo_root,
        {"preset": ["T0"]},
        hparams={"lr": [1e-3, 4e-3, 1.6e-2], "adaptive": {"rounds": 1}},
    )
    spec = load_spec(path)
    planned = plan(spec)
    for run, info in planned:
        if info["peak_lr"] == 1.6e-2:  # diverged: the runner recorded it as failed
            status = run_dir(tmp_path, run) / "status.json"
            status.parent.mkdir(parents=True, exist_ok=True)
            status.write_text(json.dumps({"state": "failed"}))
        else:
            finish(tmp_path, run, 0.5 if info["peak_lr"] == 1e-3 else 0.6)
    added = extend_sweep(spec, planned, tmp_path)
    assert [run.axes["lr"] for run, _ in added] == [0.00025]  # one step below the best, the lowest
