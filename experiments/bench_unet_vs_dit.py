"""``lit-vdit bench unet-vs-dit``: the video U-Net against the DiT at matched parameters and equal compute.

    lit-vdit bench unet-vs-dit [--spec experiments/unet_vs_dit.yaml] [--out runs/unet_vs_dit] [--workers 2]

Three stages (``--stages``), each writing under OUT; rerunning resumes the grid:

1. ``throughput``: for each matched pair (DiT rung T_k, U-Net rung U_k) among the spec's presets, the
   measured training FLOPs per sample and, on this machine, the time, samples/s and peak memory of an
   AdamW training step (:func:`lit_vdit.throughput.training_step_times`) at the grid's clip shape,
   batch size and precision. Each model is built by its run's DiffusionModule
   (:func:`lit_vdit.build.build_run`) and timed in a fresh process, so its peak memory is its own (EMA
   copy included): peak RSS growth on a CPU, ``max_memory_allocated`` on a GPU. Writes throughput.csv
   and throughput.md.
2. ``train``: the spec's grid (every run spends the same training FLOPs and is evaluated at
   log-spaced steps), run with ``experiments.runner.run_local`` and collected into grid/runs.csv.
3. ``report``: per family, the lower envelope of validation loss over all runs' loss-vs-compute
   curves, fitted with ``L(C) = E + A C^-alpha`` (analysis.laws, analysis.fitting) with bootstrap
   intervals from resampling runs, and the compute at which the two fitted curves cross. Writes
   report.html (plots embedded), report.md with figures/, and results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import pickle
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.compare import FamilyFit, comparison_results, comparison_summary, crossover, fit_family
from analysis.io import atomic_write_text
from experiments.grid import Run, expand, load_spec, resolve_key
from lit_vdit.build import build_run
from lit_vdit.models.dit import LADDER_SIZES
from lit_vdit.models.unet import UNET_SIZES
from lit_vdit.throughput import synchronize, training_step_times

SPEC = Path(__file__).with_name("unet_vs_dit.yaml")
PAIRS = dict(zip(LADDER_SIZES, UNET_SIZES, strict=True))  # DiT rung -> U-Net rung of the same size
FAMILIES = {"VideoDiT": "DiT", "VideoUNet": "U-Net"}  # denoiser class -> label (one prefix per family)
STAGES = ("throughput", "train", "report")
WARMUP_STEPS = 2


# ---- throughput ---------------------------------------------------------------------------------------


def _peak_memory(device: torch.device, reset: bool = False) -> int:
    """Peak bytes since the last reset: CUDA allocations, or on a CPU the process's peak RSS (Linux:
    resetting writes /proc/self/clear_refs, which sets the peak to the current RSS, where permitted)."""
    if device.type == "cuda":
        synchronize(device)
        if reset:
            torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.max_memory_allocated(device)
    if reset:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def measure_step(args: list[str], steps: int, device: str) -> dict[str, Any]:
    """Seconds per AdamW training step (median) of a run's denoiser, built by its DiffusionModule from
    the run's arguments, and the peak memory above the footprint before the model (its EMA included);
    with the costs the module measured when it built the model, its batch size and precision."""
    built = build_run(args)
    module, data = built.module, built.datamodule
    dev = torch.device(device)
    baseline = _peak_memory(dev, reset=True)
    torch.manual_seed(0)
    module.build(data.clip_shape, data.num_classes)
    model = module.denoiser.to(dev)
    batch = data.batch_size
    x0 = torch.randn(batch, *module.latent_shape, device=dev)
    y = torch.randint(0, data.num_classes, (batch,), device=dev) if data.num_classes else None
    autocast = torch.bfloat16 if str(built.trainer.precision) == "bf16-mixed" else None
    times = training_step_times(model, module.objective, x0, y, steps, autocast, warmup=WARMUP_STEPS)
    peak = _peak_memory(dev)
    seconds = float(np.median(times))  # robust to other processes' bursts on a shared machine
    timing = {
        "step_time_s": seconds,
        "samples_per_s": batch / seconds,
        "peak_memory_mb": (peak - baseline) / 2**20,
    }
    return {
        "timing": timing,
        "costs": module.costs,
        "batch_size": batch,
        "precision": str(built.trainer.precision),
    }


_CHILD = (
    "import pickle, sys\n"
    "from experiments.bench_unet_vs_dit import measure_step\n"
    "args, steps, device = pickle.load(sys.stdin.buffer)\n"
    "pickle.dump(measure_step(args, steps, device), sys.stdout.buffer)\n"
)


def measure(run: Run, steps: int, device: str) -> dict[str, Any]:
    """:func:`measure_step` in a fresh Python process, so that the peak memory is this model's alone."""
    payload = pickle.dumps((run.cli_args(), steps, device))
    done = subprocess.run([sys.executable, "-c", _CHILD], input=payload, capture_output=True)
    if done.returncode:
        raise RuntimeError(f"timing {run.name} failed:\n{done.stderr.decode()[-3000:]}")
    return pickle.loads(done.stdout)


def matched_pairs(spec: dict[str, Any]) -> tuple[list[tuple[str, str]], dict[str, Run]]:
    """The (DiT, U-Net) preset pairs of the spec, and one run of each preset."""
    runs = {run.overrides.get(resolve_key("preset")): run for run in expand(spec)}
    pairs = [(dit, unet) for dit, unet in PAIRS.items() if dit in runs and unet in runs]
    if not pairs:
        raise SystemExit(
            f"the grid has no matched pair: its presets {sorted(map(str, runs))} must include a DiT rung "
            f"and its U-Net match, e.g. T3 and U3 (pairs: {PAIRS})"
        )
    return pairs, runs


def throughput(spec: dict[str, Any], steps: int, device: str) -> pd.DataFrame:
    """One row per matched pair: both models' measured FLOPs, step time, samples/s and peak memory."""
    pairs, runs = matched_pairs(spec)
    rows = []
    for dit, unet in pairs:
        row: dict[str, Any] = {"pair": f"{dit}/{unet}"}
        for prefix, preset in (("dit", dit), ("unet", unet)):
            measured = measure(runs[preset], steps, device)
            timing, costs, batch = measured["timing"], measured["costs"], measured["batch_size"]
            step_flops = costs["flops_train_step"] * batch
            row |= {
                f"{prefix}_preset": preset,
                f"{prefix}_params": costs["params_non_embedding"],
                f"{prefix}_train_flops_per_sample": costs["flops_train_step"],
                **{f"{prefix}_{key}": value for key, value in timing.items()},
                f"{prefix}_gflop_per_s": step_flops / timing["step_time_s"] / 1e9,
            }
        row["flops_ratio"] = row["unet_train_flops_per_sample"] / row["dit_train_flops_per_sample"]
        row["speed_ratio"] = row["unet_samples_per_s"] / row["dit_samples_per_s"]
        row |= {
            "clip_shape": "x".join(map(str, costs["latent_shape"])),
            "batch_size": batch,
            "precision": measured["precision"],
            "device": device,
        }
        rows.append(row)
    return pd.DataFrame(rows)


# ---- report -----------------------------------------------------------------------------------------


def family_curves(table: pd.DataFrame, metric: str, min_step: int) -> dict[str, pd.DataFrame]:
    """Per family label: the evaluation points (run_id, preset, step, C, y) from ``min_step`` on."""
    points = table[(table["step"] >= min_step) & table[metric].notna()]
    points = points.assign(C=points["flops_measured"], y=points[metric])
    return {
        FAMILIES.get(name, name): frame[["run_id", "preset", "step", "C", "y"]]
        for name, frame in points.groupby("denoiser")
    }


def compare_families(
    table: pd.DataFrame,
    metric: str,
    *,
    min_step: int,
    n_boot: int,
    seed: int,
    level: float,
    extrapolate: float,
) -> tuple[list[FamilyFit], dict[str, Any]]:
    """Each denoiser family's envelope fit (:func:`analysis.compare.fit_family`, from ``min_step``
    on) and the crossover of the first two; the benchmark's report and the demo's both use it."""
    curves = family_curves(table, metric, min_step)
    if len(curves) < 2:
        raise SystemExit(
            f"the runs table has {len(curves)} denoiser families with data; need a DiT and a U-Net"
        )
    fits = [fit_family(name, f, n_boot=n_boot, seed=seed, level=level) for name, f in sorted(curves.items())]
    return fits, crossover(fits[0], fits[1], extrapolate, level)


def write_report(
    out: Path, table: pd.DataFrame, through: pd.DataFrame | None, args: argparse.Namespace
) -> dict[str, Any]:
    """Fit both families, find the crossover, write report.html, report.md, figures/ and results.json."""
    # analysis.report draws with matplotlib: imported here only, not in the timing processes.
    from analysis.plots import family_comparison
    from analysis.report import Bullets, Section, Table, comparison_section, num, save_report

    metric = args.metric or (
        "val_loss_ema" if "val_loss_ema" in table and table["val_loss_ema"].notna().any() else "val_loss_raw"
    )
    fits, cross = compare_families(
        table, metric, min_step=args.min_step, n_boot=args.bootstrap, seed=args.seed, level=args.level,
        extrapolate=args.extrapolate,
    )  # fmt: skip
    summary = comparison_summary(fits, cross, args.level)
    if through is not None:
        flops, speed = through["flops_ratio"], through["speed_ratio"]
        summary.append(
            f"At matched parameters the U-Net costs {flops.min():.1f}-{flops.max():.1f}x the DiT's training "
            f"FLOPs per sample and trains at {speed.min():.2f}-{speed.max():.2f}x its samples/s "
            f"({through['device'].iloc[0]})."
        )
    sections = [Section("Summary", [Bullets(summary)])]
    if through is not None:
        sections.append(throughput_section(through))
    plot = family_comparison(fits, cross, args.level)
    sections.append(
        comparison_section(
            "Loss against training compute", fits, cross, plot, metric=metric, min_step=args.min_step,
            level=args.level, extrapolate=args.extrapolate,
        )
    )  # fmt: skip
    final = table.sort_values("step").groupby("run_id").tail(1)
    hardware = ", ".join(map(str, final["hardware"].unique())) if "hardware" in final else "unknown hardware"
    sections.append(
        Section(
            "Runs",
            [
                f"{len(final)} runs on {hardware}; each row is the run's last evaluation.",
                Table(
                    ["family", "preset", "N", "steps", "C (FLOPs)", metric, "finished"],
                    [
                        [
                            FAMILIES.get(r.denoiser, r.denoiser),
                            str(r.preset),
                            f"{int(r.params_non_embedding):,d}",
                            str(int(r.step)),
                            num(r.flops_measured),
                            num(getattr(r, metric)),
                            str(r.finished),
                        ]
                        for r in final.sort_values(["denoiser", "params_non_embedding"]).itertuples()
                    ],
                ),
            ],
        )
    )
    results = {
        "metric": metric,
        **comparison_results(fits, cross),
        "summary": summary,
        "throughput": through.to_dict(orient="records") if through is not None else None,
    }
    save_report(out, args.title, sections, [plot], results)
    return results


THROUGHPUT_NOTE = (
    "FLOPs are measured per sample for one training step (forward and backward, torch.utils.flop_counter). "
    "Step time and samples/s: the median of timed AdamW steps after warm-up. Peak memory: on a GPU "
    "torch.cuda.max_memory_allocated (parameters, gradients, optimizer state, activations); on a CPU the "
    "growth of the measuring process's peak RSS from before the model was built, which also counts the "
    "one-time initialisation of PyTorch's CPU kernels (about 170 MB on the development machine)."
)


def throughput_section(through: pd.DataFrame):
    """The throughput rows as a report section: one row per matched pair, DiT | U-Net side by side."""
    from analysis.report import Section, Table, num

    def both(r: dict[str, Any], key: str, scale: float = 1.0) -> str:
        return f"{num(r[f'dit_{key}'] / scale)} | {num(r[f'unet_{key}'] / scale)}"

    rows = [
        [
            r["pair"],
            f"{int(r['dit_params']):,d} | {int(r['unet_params']):,d}",
            both(r, "train_flops_per_sample", 1e9),
            f"{r['flops_ratio']:.2f}",
            both(r, "step_time_s"),
            both(r, "samples_per_s"),
            both(r, "gflop_per_s"),
            both(r, "peak_memory_mb"),
        ]
        for r in through.to_dict(orient="records")
    ]
    headers = ["pair", "N DiT | U-Net", "GFLOP/sample DiT | U-Net", "FLOPs U-Net/DiT", "step s DiT | U-Net"]
    headers += ["samples/s DiT | U-Net", "GFLOP/s DiT | U-Net", "peak MB DiT | U-Net"]
    first = through.iloc[0]
    title = (
        f"Throughput ({first['device']}, clips {first['clip_shape']}, batch {first['batch_size']}, "
        f"{first['precision']})"
    )
    return Section(title, [Table(headers, rows), THROUGHPUT_NOTE])


def write_throughput(out: Path, through: pd.DataFrame) -> None:
    from analysis.report import render_markdown

    atomic_write_text(out / "throughput.csv", through.to_csv(index=False))
    atomic_write_text(
        out / "throughput.md", render_markdown("U-Net vs DiT: throughput", [throughput_section(through)])
    )


# ---- command line -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lit-vdit bench unet-vs-dit",
        description="Video U-Net vs DiT: throughput of matched pairs, equal-compute training, fitted laws.",
    )
    parser.add_argument("--spec", default=str(SPEC), help="grid YAML (default: %(default)s)")
    parser.add_argument("--out", default="runs/unet_vs_dit", help="output folder (default: %(default)s)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), help="stages to run")
    parser.add_argument("--workers", type=int, default=1, help="concurrent training runs (default: 1)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per model (default: 5)")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device of the timing"
    )
    parser.add_argument("--metric", help="loss column (default: val_loss_ema when logged, else val_loss_raw)")
    parser.add_argument(
        "--min-step",
        type=int,
        default=20,
        help="fit evaluations from this step on, past the warm-up transient (default: %(default)s)",
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of runs")
    parser.add_argument("--level", type=float, default=0.95, help="interval level (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument(
        "--extrapolate",
        type=float,
        default=1.0,
        help="decades beyond the largest compute searched for a crossover",
    )
    parser.add_argument("--title", default="Video U-Net vs DiT at equal compute")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lit-vdit bench unet-vs-dit``; returns the exit status."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    spec = load_spec(args.spec)
    status = 0
    if "throughput" in args.stages:
        through = throughput(spec, args.steps, args.device)
        write_throughput(out, through)
        print(through.to_string(index=False))
    if "train" in args.stages:
        from experiments.cli import main as grid_main

        status = grid_main(["run", args.spec, "--out", str(out / "grid"), "--workers", str(args.workers)])
    if "report" in args.stages:
        runs_csv = out / "grid" / "runs.csv"
        if not runs_csv.is_file():
            raise SystemExit(f"{runs_csv} not found: run the train stage first (--stages train report)")
        through_csv = out / "throughput.csv"
        through = pd.read_csv(through_csv) if through_csv.is_file() else None
        results = write_report(out, pd.read_csv(runs_csv), through, args)
        print("\n".join(results["summary"]))
        print(f"wrote {out / 'report.html'}, {out / 'report.md'} and {out / 'results.json'}")
    return status


if __name__ == "__main__":
    sys.exit(main())
