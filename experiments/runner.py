"""Running a grid: one process per run, resumable, on this machine or on SLURM (submitit).

Layout of a grid directory::

    DIR/grid.json              the planned runs (ids, settings, N, D, C)
    DIR/runs/<run_id>/         one run: run.json, status.json, log.txt, metrics.csv, result.json,
                               checkpoints/, tensorboard/, csv/
    DIR/runs.csv               the collected table (``grid collect``)

A run is done when its result.json says finished; a rerun skips it. Any other run starts, or resumes
from ``checkpoints/last.ckpt``. A failing run records its error and the others go on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from experiments.grid import Run
from lit_vdit.io import atomic_write_json

STATES = ("done", "running", "failed", "pending")


def run_dir(grid_dir: Path, run: Run) -> Path:
    return grid_dir / "runs" / run.run_id


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def run_state(directory: Path) -> str:
    """done / running / failed / pending (a killed run with a checkpoint is pending: it resumes)."""
    if _read_json(directory / "result.json").get("finished"):
        return "done"
    status = _read_json(directory / "status.json")
    if status.get("state") == "running" and _alive(status.get("pid")):
        return "running"
    return "failed" if status.get("state") == "failed" else "pending"


def fit_command(run: Run, directory: Path) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "lit_vdit.cli",
        "fit",
        *run.cli_args(),
        "--trainer.default_root_dir",
        str(directory),
    ]
    last = directory / "checkpoints" / "last.ckpt"
    if last.exists():
        command += ["--ckpt_path", str(last)]
    return command


def execute(run: Run, directory: Path, threads: int | None = None) -> str:
    """Run (or resume) one run in a child process; returns its final state."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "run.json", run.to_dict())
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with open(directory / "log.txt", "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start\n")
        log.flush()
        process = subprocess.Popen(fit_command(run, directory), stdout=log, stderr=subprocess.STDOUT, env=env)
        atomic_write_json(
            directory / "status.json", {"state": "running", "pid": process.pid, "started": time.time()}
        )
        code = process.wait()
    if code == 0 and run_state(directory) == "done":
        atomic_write_json(directory / "status.json", {"state": "done", "finished": time.time()})
        return "done"
    tail = (directory / "log.txt").read_text().splitlines()[-30:]
    error = next(
        (line for line in reversed(tail) if "Error" in line or "error:" in line), tail[-1] if tail else ""
    )
    atomic_write_json(
        directory / "status.json",
        {"state": "failed", "exit_code": code, "error": error.strip(), "log_tail": tail},
    )
    return "failed"


def run_local(
    runs: list[Run],
    grid_dir: Path,
    workers: int = 1,
    on_done: Callable[[Run, str], None] | None = None,
) -> dict[str, str]:
    """Run every unfinished run: sequentially, or with ``workers`` concurrent processes; ``on_done(run,
    state)`` is called (from a worker thread) as each run ends."""
    todo = [run for run in runs if run_state(run_dir(grid_dir, run)) in ("pending", "failed")]
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None

    def one(run: Run) -> str:
        state = execute(run, run_dir(grid_dir, run), threads)
        if on_done is not None:
            on_done(run, state)
        return state

    with ThreadPoolExecutor(max_workers=workers) as pool:
        states = list(pool.map(one, todo))
    return {run.run_id: state for run, state in zip(todo, states, strict=True)}


def slurm_executor(folder: Path, cluster: str | None = None, **parameters: Any):
    """A submitit executor; ``cluster="local"`` runs jobs as local processes (for tests)."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    executor.update_parameters(**parameters)
    return executor


def job_shape(info: dict[str, Any]) -> dict[str, int]:
    """SLURM job shape of a planned run (:func:`experiments.plan.describe`): the nodes and devices
    per node of its resolved trainer config (the strategy YAML, then the overrides), one task per
    device; GPUs per node for a GPU accelerator.

    Each task starts the run's process with SLURM's environment, from which Lightning's
    SLURMEnvironment takes the rank and world size.
    """
    devices = int(info["devices_per_node"])
    gpus = 0 if info["accelerator"] == "cpu" else devices
    return {"nodes": int(info["num_nodes"]), "tasks_per_node": devices, "gpus_per_node": gpus}


def sbatch_script(run: Run, info: dict[str, Any], grid_dir: Path, **slurm: Any) -> str:
    """The sbatch file of a planned run, for review before submitting (submitit writes the same shape)."""
    from submitit.slurm.slurm import _make_sbatch_string

    shape = job_shape(info)
    return _make_sbatch_string(
        command=" ".join(fit_command(run, run_dir(grid_dir, run))),
        folder=str(grid_dir / "slurm"),
        job_name=f"lit_vdit-{run.run_id}",
        nodes=shape["nodes"],
        ntasks_per_node=shape["tasks_per_node"],
        gpus_per_node=shape["gpus_per_node"],
        **slurm,
    )


def run_slurm(planned: list[tuple[Run, dict[str, Any]]], grid_dir: Path, executor) -> list[Any]:
    """Submit every unfinished planned run as one job shaped by :func:`job_shape`; returns the jobs."""
    jobs = []
    for run, info in planned:
        if run_state(run_dir(grid_dir, run)) in ("pending", "failed"):
            if executor.cluster == "slurm":
                executor.update_parameters(**job_shape(info))
            jobs.append(executor.submit(execute, run, run_dir(grid_dir, run)))
    return jobs


def status(grid_dir: Path) -> dict[str, list[str]]:
    """Run ids by state for the runs planned in DIR/grid.json."""
    planned = _read_json(grid_dir / "grid.json").get("runs", [])
    if not planned:
        raise FileNotFoundError(
            f"{grid_dir}/grid.json not found: run `lit-vdit grid run SPEC --out {grid_dir}` first"
        )
    by_state: dict[str, list[str]] = {state: [] for state in STATES}
    for entry in planned:
        by_state[run_state(grid_dir / "runs" / entry["run_id"])].append(entry["run_id"])
    return by_state
