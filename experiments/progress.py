"""A grid's local runs with one progress bar: runs done of total, elapsed and remaining time, and a line
per finished run (its size, steps, compute, final validation loss and wall time)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from experiments.grid import Run
from experiments.runner import run_dir, run_local, run_state

# Seconds a run costs beyond its training steps (process start, imports, set-up, evaluations): the bar
# advances by a run's estimated seconds plus this, so the remaining time weighs long runs as long.
RUN_OVERHEAD_S = 5.0


def run_summary(run: Run, directory: Path, state: str) -> str:
    """One line for a finished run: name, N, steps, C, final validation loss, wall time (or its error)."""
    if state != "done":
        error = json.loads((directory / "status.json").read_text()).get("error", "")
        return f"[red]failed[/] {run.name}: {error}  (log: {directory / 'log.txt'})"
    result = json.loads((directory / "result.json").read_text())
    final, costs = result["final"], result["costs"]
    loss = final.get("val_loss_ema", final.get("val_loss_raw"))
    return (
        f"done {run.name:<20s} N={costs['params_non_embedding'] / 1e3:>6.0f}K {final['step']:>5d} steps  "
        f"C={final['flops_measured']:.2e}  loss {loss:.4f} {final['wall_time_s']:>4.0f} s"
    )


def run_with_progress(
    planned: list[tuple[Run, dict[str, Any]]],
    grid_dir: Path,
    workers: int = 1,
    console: Console | None = None,
) -> dict[str, str]:
    """:func:`run_local` over the planned runs with one progress bar for the whole grid; runs already
    finished count as done from the start. Returns the states of the runs it ran."""
    console = console or Console()
    weight = {run.run_id: info["est_wall_s"] + RUN_OVERHEAD_S for run, info in planned}
    done = [run for run, _ in planned if run_state(run_dir(grid_dir, run)) == "done"]
    columns = (
        TextColumn("[bold]grid"),
        BarColumn(),
        TextColumn("{task.fields[runs]} runs"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    lock = threading.Lock()
    with Progress(*columns, console=console, transient=False) as progress:
        count = [len(done)]
        task = progress.add_task(
            "grid",
            total=sum(weight.values()),
            completed=sum(weight[r.run_id] for r in done),
            runs=f"{len(done)}/{len(planned)}",
        )
        if done:
            progress.console.print(f"{len(done)} of {len(planned)} runs already finished: skipped")

        def finished(run: Run, state: str) -> None:
            with lock:
                count[0] += 1
                progress.console.print(run_summary(run, run_dir(grid_dir, run), state))
                progress.update(task, advance=weight[run.run_id], runs=f"{count[0]}/{len(planned)}")

        # Longest first: the last runs to start are the short ones, so no worker idles long at the end.
        longest_first = sorted((run for run, _ in planned), key=lambda run: -weight[run.run_id])
        return run_local(longest_first, grid_dir, workers=workers, on_done=finished)
