"""``lit-vdit grid run | status | collect``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from experiments.collect import collect
from experiments.grid import GridSpecError, Run, load_spec
from experiments.plan import plan
from experiments.progress import run_with_progress
from experiments.runner import run_slurm, slurm_executor, status
from experiments.sweep import sweep_settings
from lit_vdit.io import atomic_write_json


def _print_plan(planned) -> None:
    columns = ("run_id", "name", "N", "steps", "samples", "tokens", "C", "6ND", "est_s", "mem_GiB")
    widths = (12, 40, 10, 6, 8, 9, 9, 9, 6, 7)
    print(
        " ".join(
            f"{c:{w}s}" if i < 2 else f"{c:>{w}s}"
            for i, (c, w) in enumerate(zip(columns, widths, strict=True))
        )
    )
    for run, info in planned:
        cells = (
            run.run_id,
            run.name[:40],
            f"{info['params_non_embedding']:,d}",
            str(info["max_steps"]),
            str(info["samples"]),
            f"{info['tokens']:.3g}",
            f"{info['flops']:.3g}",
            f"{info['flops_6nd']:.3g}",
            str(info["est_wall_s"]),
            f"{info['est_peak_gib']:.3g}",
        )
        print(
            " ".join(
                f"{c:{w}s}" if i < 2 else f"{c:>{w}s}"
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
        )
    print(
        f"{len(planned)} runs; estimated total {sum(i['est_wall_s'] for _, i in planned)} s on this machine"
    )
    if any(run.start is not None for run, _ in planned):  # a cooldown grid: prefixes are trained once
        points = sum(info["flops"] for run, info in planned if not run.trunk)
        trained = sum(
            info["flops"] * (1 - (run.start.step if run.start else 0) / info["max_steps"])
            for run, info in planned
        )
        ratio = points / trained
        print(f"cooldown grid: trains {trained:.3g} FLOPs, {points:.3g} for the points apart ({ratio:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-vdit grid", description="Scaling grids: run, status, collect.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="plan and run a grid spec (resumes: finished runs are skipped)")
    run_p.add_argument("spec", help="grid YAML, e.g. experiments/demo.yaml")
    run_p.add_argument("--out", required=True, help="grid directory")
    run_p.add_argument(
        "--dry-run", action="store_true", help="print the runs with N, D, C and estimated time"
    )
    run_p.add_argument("--workers", type=int, default=1, help="concurrent local runs")
    run_p.add_argument("--launcher", choices=["local", "slurm"], default="local")
    run_p.add_argument(
        "--slurm",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="submitit parameters, e.g. slurm_partition=gpu nodes=2 tasks_per_node=8 gpus_per_node=8",
    )
    for name, text in (
        ("status", "done / running / failed / pending runs"),
        ("collect", "write DIR/runs.csv"),
    ):
        sub.add_parser(name, help=text).add_argument("dir")
    args = parser.parse_args(argv)

    if args.command == "status":
        for state, ids in status(Path(args.dir)).items():
            print(f"{state:8s} {len(ids):4d}  {' '.join(ids)}")
        return 0
    if args.command == "collect":
        table = collect(args.dir)
        print(f"wrote {Path(args.dir) / 'runs.csv'}: {len(table)} rows from {table['run_id'].nunique()} runs")
        return 0
    try:
        planned = plan(load_spec(args.spec), Path(args.out))
    except GridSpecError as error:
        parser.error(str(error))
    _print_plan(planned)
    if args.dry_run:
        return 0
    out = Path(args.out)
    if args.launcher == "slurm":
        write_grid(out, args.spec, planned)
        parameters = dict(item.split("=", 1) for item in args.slurm)
        jobs = run_slurm(planned, out, slurm_executor(out / "slurm", **parameters))
        print(f"submitted {len(jobs)} jobs: {' '.join(job.job_id for job in jobs)}")
        return 0
    return 1 if run_grid(args.spec, out, planned, workers=args.workers) else 0


def write_grid(out: Path, spec: str | Path, planned: list[tuple[Run, dict[str, Any]]]) -> None:
    """DIR/grid.json: the spec's path and every planned run with its settings, N, D and C."""
    atomic_write_json(
        out / "grid.json",
        {"spec": str(Path(spec).resolve()), "runs": [{**run.to_dict(), **info} for run, info in planned]},
    )


def run_grid(
    spec: str | Path, out: Path, planned: list[tuple[Run, dict[str, Any]]], workers: int = 1
) -> list[str]:
    """Run a planned grid on this machine with one progress bar (finished runs skipped), collect
    DIR/runs.csv; returns the ids of the runs that failed. ``grid run`` and the demo both use it."""
    adaptive = (sweep_settings(load_spec(spec)) or {}).get("adaptive")  # only it adds runs as results come
    while True:
        write_grid(out, spec, planned)
        states = run_with_progress(planned, out, workers=workers)
        more = plan(load_spec(spec), out) if adaptive else planned
        if len(more) == len(planned):  # an adaptive sweep adds runs past the edges of finished points
            break
        planned = more
    failed = [run_id for run_id, state in states.items() if state == "failed"]
    collect(out)
    failed_ids = ": " + " ".join(failed) if failed else ""
    print(f"ran {len(states)} runs, {len(failed)} failed{failed_ids}; table {out / 'runs.csv'}")
    return failed


def bench_main(argv: list[str]) -> int:
    """``lit-vdit bench unet-vs-dit ...``: the benchmarks of model families."""
    if argv[:1] != ["unet-vs-dit"]:
        raise SystemExit("lit-vdit bench: name a benchmark: unet-vs-dit")
    from experiments.bench_unet_vs_dit import main as unet_vs_dit

    return unet_vs_dit(argv[1:])
