"""Running a grid: one process per run, resumable, on this machine or on SLURM (submitit).

Layout of a grid directory::

    DIR/grid.json              the planned runs (ids, settings, N, D, C)
    DIR/runs/<run_id>/         one run: run.json, status.json, log.txt, metrics.csv, result.json,
                               checkpoints/, tensorboard/, csv/
    DIR/runs.csv               the collected table (``grid collect``)

A run is done when its result.json says finished; a rerun skips it. Any other run starts, or resumes
from ``checkpoints/last.ckpt``. A failing run records its error and the others go on.

Each run is its own process, forked from a server process that has imported torch and Lightning
once (multiprocessing's ``forkserver``): a run starts without the seconds of imports that a fresh
``python -m lit_vdit.cli fit`` spends (7 s of a 2-core CPU run), which small grids would pay per run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from experiments.grid import Run
from lit_vdit.callbacks import BranchCheckpoints
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


def start_checkpoint(run: Run, directory: Path) -> Path | None:
    """The checkpoint a run (re)starts from: its own last one, else, for a cooldown branch, its trunk's
    checkpoint at the branch's start (which may not exist yet); None for a run from step 0."""
    last = directory / "checkpoints" / "last.ckpt"
    if last.exists():
        return last
    if run.start is not None:
        return BranchCheckpoints.path(directory.parent / run.start.trunk_id, run.start.step)
    return None


def fit_command(run: Run, directory: Path) -> list[str]:
    """The run's command line: ``python -m lit_vdit.cli fit ...``, resuming from its last checkpoint
    (a branch: from its trunk's checkpoint when it has none of its own)."""
    command = [
        sys.executable,
        "-m",
        "lit_vdit.cli",
        "fit",
        *run.cli_args(),
        "--trainer.default_root_dir",
        str(directory),
    ]
    start = start_checkpoint(run, directory)
    if start is not None and start.exists():
        command += ["--ckpt_path", str(start)]
    return command


_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(["lit_vdit.build"])  # torch, Lightning and the models, imported once


_STARTING = threading.Lock()


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """multiprocessing's forkserver children import the parent's ``__main__`` again (by module name or
    file) before running their target, so a calling script without an ``if __name__ == "__main__"``
    guard would run again in every run's process. The target needs nothing from ``__main__``: while a
    process starts, ``__main__`` names neither."""
    main = sys.modules["__main__"]
    with _STARTING:
        saved = {key: main.__dict__[key] for key in ("__spec__", "__file__") if key in main.__dict__}
        main.__spec__ = None
        main.__dict__.pop("__file__", None)
        try:
            yield
        finally:
            main.__dict__.update(saved)


def _run_command(command: list[str], log_path: str, threads: int | None) -> None:
    """In the forked child: be the process ``command`` would start (``python -m lit_vdit.cli ...``)
    with its output in ``log_path``."""
    log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    if threads:
        import torch

        os.environ["OMP_NUM_THREADS"] = str(threads)  # for the processes a multi-process run launches
        torch.set_num_threads(threads)
    # Lightning's multi-process launchers start the other ranks as ``python -m <__main__'s module>
    # sys.argv[1:]`` (lightning_cli sets sys.argv to the run's arguments): __main__ must be the CLI.
    sys.modules["__main__"].__spec__ = importlib.util.find_spec("lit_vdit.cli")
    from lit_vdit.cli import main as cli_main

    sys.stdout.flush()
    code = cli_main(command[3:])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


def readiness(run: Run, directory: Path) -> str:
    """``ready`` to start; for a branch whose trunk has not saved its start yet, ``waiting`` while the
    trunk may still save it and ``blocked`` once the trunk ended without it."""
    start = start_checkpoint(run, directory)
    if start is None or start.exists():
        return "ready"
    return "blocked" if run_state(directory.parent / run.start.trunk_id) in ("done", "failed") else "waiting"


def _record_failure(directory: Path, code: int | None, error: str, tail: list[str]) -> str:
    atomic_write_json(
        directory / "status.json",
        {"state": "failed", "exit_code": code, "error": error.strip(), "log_tail": tail},
    )
    return "failed"


def execute(run: Run, directory: Path, threads: int | None = None) -> str:
    """Run (or resume) one run in a child process; returns its final state. A branch whose trunk has
    not saved its start fails at once, naming the trunk (schedulers start branches after it)."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / "run.json", run.to_dict())
    if readiness(run, directory) != "ready":
        trunk = run.start.trunk_id
        error = (
            f"cooldown branch: its trunk {trunk} has not saved step {run.start.step} (trunk "
            f"{run_state(directory.parent / trunk)}; log {directory.parent / trunk / 'log.txt'})"
        )
        return _record_failure(directory, None, error, [])
    log = directory / "log.txt"
    with open(log, "a") as file:
        file.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start\n")
    process = _FORKSERVER.Process(target=_run_command, args=(fit_command(run, directory), str(log), threads))
    with _main_not_reimported():
        process.start()
    atomic_write_json(
        directory / "status.json", {"state": "running", "pid": process.pid, "started": time.time()}
    )
    process.join()
    code = process.exitcode
    if code == 0 and run_state(directory) == "done":
        atomic_write_json(directory / "status.json", {"state": "done", "finished": time.time()})
        return "done"
    tail = log.read_text().splitlines()[-30:]
    error = next(
        (line for line in reversed(tail) if "Error" in line or "error:" in line), tail[-1] if tail else ""
    )
    return _record_failure(directory, code, error, tail)


def run_local(
    runs: list[Run],
    grid_dir: Path,
    workers: int = 1,
    on_done: Callable[[Run, str], None] | None = None,
) -> dict[str, str]:
    """Run every unfinished run: sequentially, or with ``workers`` concurrent processes, each next
    the first of ``runs`` that can start (a cooldown branch once its trunk saved its start);
    ``on_done(run, state)`` is called (from a worker thread) as each run ends."""
    waiting = [run for run in runs if run_state(run_dir(grid_dir, run)) in ("pending", "failed")]
    todo = list(waiting)
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    states: dict[str, str] = {}

    def one(run: Run) -> str:
        state = execute(run, run_dir(grid_dir, run), threads)
        if on_done is not None:
            on_done(run, state)
        return state

    with ThreadPoolExecutor(max_workers=workers) as pool:
        running: dict[Future, Run] = {}
        while waiting or running:
            unfinished = {run.run_id for run in [*waiting, *running.values()]}
            for run in list(waiting):
                ready = readiness(run, run_dir(grid_dir, run))
                if ready == "waiting" and run.start.trunk_id not in unfinished:
                    ready = "blocked"  # its trunk is not among the runs to run
                if ready == "blocked" or (ready == "ready" and len(running) < workers):
                    waiting.remove(run)  # a blocked run fails at once: execute records why
                    running[pool.submit(one, run)] = run
            finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                states[running.pop(future).run_id] = future.result()
    return {run.run_id: states[run.run_id] for run in todo}


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
    """Submit every unfinished planned run as one job shaped by :func:`job_shape`; returns the jobs.

    A cooldown branch whose trunk is submitted too waits for it: on SLURM with the job dependency
    ``afterok:<trunk job>``; other submitit clusters (local, debug) submit it once the trunk's job ended.
    """
    jobs, trunk_jobs = [], {}
    for run, info in planned:
        if run_state(run_dir(grid_dir, run)) not in ("pending", "failed"):
            continue
        trunk_job = trunk_jobs.get(run.start.trunk_id) if run.start is not None else None
        extra = {}
        if trunk_job is not None and executor.cluster == "slurm":
            extra = {"dependency": f"afterok:{trunk_job.job_id}"}
        elif trunk_job is not None:
            trunk_job.wait()
        if executor.cluster == "slurm":
            executor.update_parameters(**job_shape(info), slurm_additional_parameters=extra)
        job = executor.submit(execute, run, run_dir(grid_dir, run))
        if run.trunk:
            trunk_jobs[run.run_id] = job
        jobs.append(job)
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
