"""Grid specs, dry runs, resumable local runs (SIGKILL), failures, collection, SLURM via submitit."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from experiments.collect import collect
from experiments.grid import GridSpecError, expand, load_spec
from experiments.plan import plan
from experiments.runner import run_local, run_state, status
from lit_vdit import schema
from lit_vdit.callbacks import log_spaced_steps
from lit_vdit.schema import names

STEPS = 12


def write_spec(tmp_path, repo_root, axes, checkpoint_every=2, **extra):
    with open(os.path.join(repo_root, "configs/trainer/cpu.yaml")) as f:
        trainer = yaml.safe_load(f)
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = checkpoint_every
        if callback["class_path"].endswith("ScalingRecorder"):
            callback["init_args"]["eval_points"] = 5
    trainer["enable_progress_bar"] = False
    (tmp_path / "trainer.yaml").write_text(yaml.safe_dump(trainer))
    spec = {
        "name": "test",
        "base": {
            "model": "configs/model/dit_demo.yaml",
            "data": "configs/data/synthetic.yaml",
            "trainer": str(tmp_path / "trainer.yaml"),
            "overrides": {
                "steps": STEPS,
                "seed": 0,
                "batch_size": 4,
                "num_clips": 16,
                "data.init_args.frames": 2,
                "data.init_args.height": 8,
                "data.init_args.width": 8,
                "data.init_args.val_clips": 4,
                "model.init_args.denoiser.init_args.patch_size": [1, 4, 4],
            },
        },
        "axes": axes,
        **extra,
    }
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_expansion_aliases_derived_settings_and_stable_ids(tmp_path, repo_root):
    path = write_spec(
        tmp_path,
        repo_root,
        {"preset": ["T0", "T1"], "seed": [0, 1]},
        derived={"lr": {"by": "preset", "values": {"T0": 0.002, "T1": 0.001}}},
    )
    runs = expand(load_spec(path))
    assert len(runs) == 4
    assert runs[0].overrides["model.init_args.denoiser.init_args.preset"] == "T0"
    assert (
        runs[0].overrides["model.init_args.lr"] == 0.002 and runs[3].overrides["model.init_args.lr"] == 0.001
    )
    assert len({run.run_id for run in runs}) == 4
    assert [run.run_id for run in runs] == [run.run_id for run in expand(load_spec(path))]


def test_bad_specs_name_the_problem(tmp_path, repo_root):
    path = write_spec(tmp_path, repo_root, {"preset": "T0"})
    with pytest.raises(GridSpecError, match="axis 'preset' must be a non-empty list"):
        load_spec(path)
    (tmp_path / "bad.yaml").write_text("name: x\naxes: {preset: [T0]}\nlaunchers: 3\n")
    with pytest.raises(GridSpecError, match="unknown top-level key"):
        load_spec(tmp_path / "bad.yaml")


def test_dry_run_plan_and_isoflop_steps(tmp_path, repo_root):
    path = write_spec(
        tmp_path, repo_root, {"preset": ["T0", "T2"]}, isoflop={"budgets": [2e9, 8e9], "min_steps": 1}
    )
    planned = plan(load_spec(path))
    assert len(planned) == 4
    for run, info in planned:
        assert info["global_batch"] == 4 and info["samples"] == info["max_steps"] * 4
        # every run spends its budget (up to rounding to whole steps)
        assert info["flops"] == pytest.approx(run.axes["budget"], rel=0.5 / info["max_steps"] + 1e-9)
        assert run.overrides["trainer.max_steps"] == info["max_steps"]
    small, big = planned[0][1], planned[1][1]
    assert (
        small["params_non_embedding"] < big["params_non_embedding"] and small["max_steps"] > big["max_steps"]
    )


def test_killed_grid_finishes_on_rerun_with_every_row_once(tmp_path, repo_root):
    path = write_spec(tmp_path, repo_root, {"preset": ["T0", "T1"]})
    out = tmp_path / "grid"
    command = [sys.executable, "-m", "lit_vdit.cli", "grid", "run", str(path), "--out", str(out)]
    process = subprocess.Popen(
        command, cwd=repo_root, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "runs").glob("*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert list((out / "runs").glob("*/checkpoints/last.ckpt")), "the grid never wrote a checkpoint"
    states = status(out)
    assert len(states["done"]) < 2

    subprocess.run(command, cwd=repo_root, check=True, capture_output=True)
    table = pd.read_csv(out / "runs.csv")
    assert table["run_id"].nunique() == 2
    # the schema's columns, in its order, but the optional ones (grid modes, post-hoc EMA), then the axes
    assert list(table.columns) == [*names(schema.RUNS[: -len(schema.RUN_OPTIONAL)]), "axis_preset"]
    for _, rows in table.groupby("run_id"):
        assert list(rows["step"]) == log_spaced_steps(STEPS, 5)
        assert rows["samples_seen"].iloc[-1] == STEPS * 4
    assert status(out)["done"] and len(status(out)["done"]) == 2


def test_broken_run_is_recorded_as_failed_while_others_complete(tmp_path, repo_root):
    path = write_spec(tmp_path, repo_root, {"preset": ["T0", "NOPE"]})
    runs = expand(load_spec(path))
    out = tmp_path / "grid"
    states = run_local(runs, out, workers=2)  # two concurrent worker processes
    assert sorted(states.values()) == ["done", "failed"]
    failed = next(run for run in runs if states[run.run_id] == "failed")
    status_file = (out / "runs" / failed.run_id / "status.json").read_text()
    assert "unknown DiT preset" in status_file
    assert run_state(out / "runs" / failed.run_id) == "failed"
    assert collect(out)["run_id"].nunique() == 1


def test_a_multi_process_run_starts_from_the_forked_server_like_from_its_command_line(tmp_path, repo_root):
    """Runs fork from a server with Lightning imported; a DDP run's launcher must still start its
    second rank as `python -m lit_vdit.cli fit ...` with the run's arguments."""
    path = write_spec(tmp_path, repo_root, {"preset": ["T0"], "strategy": ["ddp_cpu"]})
    runs = expand(load_spec(path))
    out = tmp_path / "grid"
    assert run_local(runs, out) == {runs[0].run_id: "done"}
    result = json.loads((out / "runs" / runs[0].run_id / "result.json").read_text())
    assert result["world_size"] == 2 and result["final"]["samples_seen"] == STEPS * 4 * 2


def test_submitit_local_executor_runs_a_grid_run(tmp_path, repo_root):
    from experiments.runner import run_dir, run_slurm, slurm_executor

    path = write_spec(tmp_path, repo_root, {"preset": ["T0"]})
    planned = plan(load_spec(path))
    executor = slurm_executor(tmp_path / "submitit", cluster="local", timeout_min=10)
    jobs = run_slurm(planned, tmp_path / "grid", executor)
    assert [job.result() for job in jobs] == ["done"]
    assert run_state(run_dir(tmp_path / "grid", planned[0][0])) == "done"


def test_multinode_fsdp_sbatch_script(tmp_path, repo_root):
    from experiments.runner import sbatch_script

    path = write_spec(
        tmp_path,
        repo_root,
        {"preset": ["T0"], "strategy": ["fsdp_gpu"], "trainer.num_nodes": [2], "devices": [8]},
    )
    [(run, info)] = plan(load_spec(path))  # a GPU grid plans on this GPU-less machine (a login node)
    assert info["world_size"] == 16
    script = sbatch_script(run, info, tmp_path / "grid", partition="gpu", time=600)
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=gpu",
    ):
        assert line in script
    assert "srun" in script
    assert "fsdp_gpu.yaml" in script and "--trainer.num_nodes 2" in script and "--trainer.devices 8" in script
    assert f"runs/{run.run_id}" in script


@pytest.mark.parametrize(
    ("strategy", "overrides", "shape"),
    [
        ("fsdp2_gpu", {}, {"nodes": 1, "tasks_per_node": 8, "gpus_per_node": 8}),  # devices: 8 in its YAML
        ("fsdp2_gpu", {"trainer.num_nodes": [2]}, {"nodes": 2, "tasks_per_node": 8, "gpus_per_node": 8}),
        ("ddp_cpu", {}, {"nodes": 1, "tasks_per_node": 2, "gpus_per_node": 0}),
    ],
)
def test_job_shape_comes_from_the_resolved_trainer_config(tmp_path, repo_root, strategy, overrides, shape):
    from experiments.runner import job_shape

    path = write_spec(tmp_path, repo_root, {"preset": ["T0"], "strategy": [strategy], **overrides})
    [(_, info)] = plan(load_spec(path))
    assert job_shape(info) == shape
    assert info["world_size"] == shape["nodes"] * shape["tasks_per_node"]
    assert info["global_batch"] == 4 * info["world_size"]


def test_devices_auto_on_a_machine_without_gpus_asks_for_a_number(tmp_path, repo_root):
    path = write_spec(tmp_path, repo_root, {"preset": ["T0"], "strategy": ["ddp_gpu"]})
    with pytest.raises(ValueError, match=r"trainer.devices is 'auto'.*--trainer.devices 8"):
        plan(load_spec(path))


def test_isoflop_window_of_steps_and_warmup_fraction(tmp_path, repo_root):
    iso = {"budgets": [2e9, 8e9], "min_steps": 1, "max_steps": 300, "warmup_fraction": 0.1}
    path = write_spec(tmp_path, repo_root, {"preset": ["T0", "T2"]}, isoflop=iso)
    planned = plan(load_spec(path))
    everything = plan(load_spec(write_spec(tmp_path, repo_root, {"preset": ["T0", "T2"]},
                                           isoflop={**iso, "max_steps": 10**6})))  # fmt: skip
    steps = {run.name: info["max_steps"] for run, info in everything}
    kept = {run.name for run, _ in planned}
    assert kept == {name for name, n in steps.items() if n <= 300} and len(kept) < len(steps)
    for run, info in planned:  # each run warms up over a tenth of its own steps
        assert run.overrides["model.init_args.warmup_steps"] == max(1, round(0.1 * info["max_steps"]))
    with pytest.raises(GridSpecError, match="unknown key.*budget_list"):
        plan(load_spec(write_spec(tmp_path, repo_root, {"preset": ["T0"]}, isoflop={"budget_list": [1e9]})))


def test_collect_keeps_the_runs_of_the_current_plan_only(tmp_path, repo_root):
    out = tmp_path / "grid"
    old = expand(load_spec(write_spec(tmp_path, repo_root, {"preset": ["T0", "T1"]})))
    assert sorted(run_local(old, out).values()) == ["done", "done"]
    spec = write_spec(tmp_path, repo_root, {"preset": ["T0"]})  # the spec changed: T1 is no longer in it
    from experiments.cli import main as grid_main

    assert grid_main(["run", str(spec), "--out", str(out)]) == 0  # T0 resumes (finished), nothing runs
    table = pd.read_csv(out / "runs.csv")
    assert set(table["preset"]) == {"T0"} and (out / "runs" / old[1].run_id).is_dir()


def test_a_null_override_reaches_the_run_as_none(tmp_path, repo_root):
    from lit_vdit.build import build_run

    path = write_spec(tmp_path, repo_root, {"preset": ["T0"]})
    spec = load_spec(path)
    spec["base"]["overrides"]["data.init_args.val_batch_size"] = None  # YAML null: Optional[int]
    (run,) = expand(spec)
    assert build_run(run.cli_args()).config["data"]["init_args"]["val_batch_size"] is None
