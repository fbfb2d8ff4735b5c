"""``lit-vdit demo``: a small but complete scaling study on the synthetic clips (experiments/demo.yaml).

An IsoFLOP grid of DiT sizes and compute budgets plus param-matched U-Nets runs on this machine with
one progress bar; the report (DEMO/report/report.html and .md) then shows the Chinchilla fit L(N, D),
L(N) and the compute envelope L(C) as power laws, N_opt(C) by the three approaches of Hoffmann et al.,
the largest budget's losses predicted by a fit that did not see them, U-Net against DiT at matched
compute, and samples of every DiT size from the same noise.

By default the models train in pixel space. ``--latent`` first trains the demo VAE
(configs/model/vae_demo.yaml, 1x4x4 compression, 4 channels), encodes every clip once into a latent
cache (``lit-vdit cache-latents``: the runs then read latents instead of encoding each batch) and runs
the same study in its latent space (DiT patch 1x1x1, so the token count equals the pixel grid's), with
samples decoded by the VAE. Everything resumes: rerunning the demo skips finished runs and only
reports again.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from rich.console import Console

from analysis.compare import comparison_results, comparison_summary
from analysis.data import Columns
from analysis.plots import Plot, family_comparison, make_plots
from analysis.report import Section, Table, build_sections, comparison_section, num, save_report
from analysis.report import estimate_text as est
from analysis.study import Study, StudyOptions, run_study
from experiments.bench_unet_vs_dit import PAIRS, compare_families
from experiments.cli import run_grid
from experiments.gallery import gallery, real_clips, sample_run
from experiments.grid import Run, load_spec
from experiments.plan import plan
from experiments.runner import run_dir
from lit_vdit.build import build_run, lightning_cli, quiet_lightning
from lit_vdit.data.latents import main as cache_latents

REPO_ROOT = Path(__file__).resolve().parents[1]
METRIC = "val_loss_raw"  # the demo's runs keep no EMA (see demo.yaml)
SYNTHETIC = REPO_ROOT / "configs" / "data" / "synthetic.yaml"
DENOISER = "model.init_args.denoiser.class_path"
MIN_STEP = 10  # the U-Net vs DiT envelopes start past the first evaluations' warm-up transient


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lit-vdit demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out", help="output folder (default: %(default)s)")
    parser.add_argument("--spec", default=str(REPO_ROOT / "experiments" / "demo.yaml"), help="grid spec")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="concurrent runs, each with cores/workers threads (default: %(default)s)",
    )
    parser.add_argument(
        "--latent", action="store_true", help="train the demo VAE, then the study in its latent space"
    )
    parser.add_argument("--vae-steps", type=int, default=300, help="training steps of the demo VAE")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    out = Path(args.out)
    start = time.perf_counter()
    spec, grid_dir, report_dir = args.spec, out / "grid", out / "report"
    if args.latent:  # its own folders: a runs.csv never mixes pixel- and latent-space runs
        vae = train_demo_vae(out / "vae", args.spec, args.vae_steps)
        spec = latent_spec(args.spec, vae, cache_demo_latents(vae, args.spec, out / "latents"), out)
        grid_dir, report_dir = out / "grid_latent", out / "report_latent"

    planned = plan(load_spec(spec))
    console.print(describe_grid(planned, args.workers))
    failed = run_grid(spec, grid_dir, planned, workers=args.workers)
    if failed:
        console.print(f"[red]demo: {len(failed)} runs failed[/]; see `lit-vdit grid status {grid_dir}`")
        return 1
    trained = time.perf_counter()

    console.print("fitting the laws and drawing the report ...")
    study, lines = write_report(pd.read_csv(grid_dir / "runs.csv"), planned, grid_dir, report_dir, args)
    console.print(*lines, sep="\n")
    console.print(
        f"\ndemo finished in {time.perf_counter() - start:.0f} s (grid {trained - start:.0f} s, report "
        f"{time.perf_counter() - trained:.0f} s)\n  runs table : {grid_dir / 'runs.csv'}\n"
        f"  report     : {report_dir / 'report.html'} (and report.md)"
    )
    return 0


def describe_grid(planned: list[tuple[Run, dict[str, Any]]], workers: int) -> str:
    sizes = sorted({str(run.axes["preset"]) for run, _ in planned})
    budgets = sorted({run.axes["budget"] for run, _ in planned})
    return (
        f"demo: {len(planned)} runs ({', '.join(sizes)} at {len(budgets)} compute budgets "
        f"{budgets[0]:.1e}..{budgets[-1]:.1e} FLOPs), {workers} at a time"
    )


def write_report(
    table: pd.DataFrame,
    planned: list[tuple[Run, dict[str, Any]]],
    grid_dir: Path,
    report_dir: Path,
    args: argparse.Namespace,
) -> tuple[Study, list[str]]:
    """The study of the DiT runs, U-Net vs DiT, the sample gallery; returns the headline lines."""
    dit = table[table["denoiser"] == "VideoDiT"]
    options = StudyOptions(
        columns=Columns(y=METRIC),
        n_boot=args.bootstrap,
        metrics=(),
        title="lit_vdit demo: an IsoFLOP study of video DiTs on synthetic clips",
    )
    study = run_study(dit, options, source=str(grid_dir / "runs.csv"))
    plots = make_plots(study)
    sections = build_sections(study, plots)

    unets = set(table.loc[table["denoiser"] == "VideoUNet", "preset"])
    matched = {dit for dit, unet in PAIRS.items() if unet in unets}  # the DiTs of the U-Nets' sizes
    pairs = table[table["preset"].isin(matched | unets)]
    fits, cross = compare_families(
        pairs, METRIC, min_step=MIN_STEP, n_boot=args.bootstrap, seed=0, level=options.level, extrapolate=1.0
    )
    comparison = family_comparison(fits, cross, options.level)
    sections.append(
        comparison_section(
            f"U-Net vs DiT at matched compute ({', '.join(sorted(set(pairs['preset'])))})",
            fits, cross, comparison, metric=METRIC, min_step=MIN_STEP, level=options.level, extrapolate=1.0,
        )
    )  # fmt: skip

    samples = sample_gallery(planned, set(dit["run_id"]), grid_dir)
    first = 1 if study.warnings else 0
    sections[first:first] = [Section("Samples", [samples]), design_section(planned)]
    results = study.as_dict() | {"unet_vs_dit": comparison_results(fits, cross)}
    save_report(report_dir, options.title, sections, [*plots, comparison, samples], results)
    return study, headline(study, comparison_summary(fits, cross, options.level))


def design_section(planned: list[tuple[Run, dict[str, Any]]]) -> Section:
    """The grid as trained: per size its family, N, learning rate and steps (warm-up) at each budget."""
    budgets = sorted({run.axes["budget"] for run, _ in planned})
    by_preset: dict[str, dict[str, Any]] = {}
    for run, info in planned:
        row = by_preset.setdefault(
            str(run.axes["preset"]),
            {"N": info["params_non_embedding"], "lr": run.overrides["model.init_args.lr"], "steps": {}},
        )
        row["family"] = "U-Net" if run.overrides.get(DENOISER, "").endswith("VideoUNet") else "DiT"
        row["steps"][run.axes["budget"]] = (
            f"{run.overrides['trainer.max_steps']} ({run.overrides['model.init_args.warmup_steps']})"
        )
    rows = [
        [preset, r["family"], num(r["N"]), num(r["lr"]), *(r["steps"].get(b, "-") for b in budgets)]
        for preset, r in sorted(by_preset.items(), key=lambda kv: (kv[1]["family"], kv[1]["N"]))
    ]
    return Section(
        "Study design",
        [
            f"{len(planned)} runs: every size at every training-compute budget, each run's steps its budget "
            "over its measured training FLOPs per step. Learning rate per size: DiT lr = 0.512 / d_model "
            "(Adam's 1/width rule of muP, its constant from a learning-rate sweep), U-Nets 4e-3 (their "
            "sweep's best); linear warm-up over the first 10% of each run's steps, then one cosine cycle "
            "to 0.1 x lr at its last step. experiments/demo.yaml gives the sweeps and the reasons. Cells: "
            "steps (warm-up steps) at each budget.",
            Table(["size", "family", "N", "lr", *(f"C = {b:.1e}" for b in budgets)], rows),
        ],
    )


def sample_gallery(planned: list[tuple[Run, dict[str, Any]]], dits: set[str], grid_dir: Path) -> Plot:
    """Each DiT size's run (``dits``: run ids) at the largest budget, sampled from the same prompts (the
    captions of the first validation clips; class labels for a class-conditional grid) and noise seeds,
    with the real clips those prompts describe last."""
    largest = max(run.axes["budget"] for run, _ in planned)
    rows, prompts = [], None
    for run, info in sorted(planned, key=lambda p: p[1]["params_non_embedding"]):
        if run.axes["budget"] != largest or run.run_id not in dits:
            continue
        built = build_run(run.cli_args())
        data = built.datamodule
        if built.module.encoder is not None:
            prompts = data.split_captions("val")[: data.num_predict]
            data.prompts = prompts
        videos, labels = sample_run(built, run_dir(grid_dir, run) / "checkpoints" / "last.ckpt")
        rows.append((f"{run.axes['preset']}\nN={info['params_non_embedding'] / 1e3:.0f}K", videos))
    if prompts is not None:  # the validation clips whose captions the prompts are
        real = torch.stack([data.real_videos("val")[i]["video"] for i in range(len(prompts))])
        what = "prompts (the captions printed under them, those of the real clips in the last row)"
    else:
        real, what = real_clips(data, labels), "class labels (real clips of those classes last)"
    rows.append(("real clips", real))  # the last run's data
    return gallery(
        rows,
        f"Samples at the largest budget ({largest:.1e} FLOPs): one row per DiT size, the same {what} and "
        "noise seeds in every row; each video's frames run left to right.",
        prompts,
    )


def headline(study: Study, comparison: list[str]) -> list[str]:
    """The numbers a reader wants first: exponents, the prediction's error, the crossover."""
    lines = []
    if study.main is not None:
        iv = study.main.intervals
        lines.append(
            f"L(N, D) = E + A/N^alpha + B/D^beta: alpha = {est(iv['alpha'])}, beta = {est(iv['beta'])}, "
            f"E = {est(iv['E'])}"
        )
    if study.size_law is not None:
        lines.append(
            f"L(N) at D = {study.size_law.d:.3g} tokens: alpha = {est(study.size_law.intervals['alpha'])}"
        )
    if study.compute_law is not None:
        lines.append(f"L(C) envelope: alpha = {est(study.compute_law.intervals['alpha'])}")
    for fr in study.frontiers:
        lines.append(f"N_opt ~ C^a, approach {fr.approach}: a = {est(fr.intervals['a'])}")
    if study.agreement:
        lines.append(study.agreement)
    if study.extrapolation is not None:
        e = study.extrapolation
        inside = ""
        if e.level is not None:
            inside = f"; {e.n_inside} of {len(e.held_out)} inside their {100 * e.level:g}% intervals"
        lines.append(
            f"prediction of the {e.held_out['run_id'].nunique()} runs of the largest budget by a fit without "
            f"them: mean absolute error {e.mean_abs_pct:.2f}% (largest {e.max_abs_pct:.2f}%){inside}"
        )
    lines += comparison
    lines += [f"[yellow]warning:[/] {w}" for w in study.warnings]
    return lines


def _data_overrides(spec: str) -> list[str]:
    """The grid spec's ``data.*`` overrides as command-line arguments."""
    overrides = yaml.safe_load(Path(spec).read_text())["base"].get("overrides", {})
    return [arg for key, value in overrides.items() if key.startswith("data.")
            for arg in (f"--{key}", str(value))]  # fmt: skip


def train_demo_vae(root: Path, spec: str, steps: int) -> Path:
    """Train the demo VAE on the grid's clips under ``root`` (resuming, or reusing a finished one)."""
    last = root / "checkpoints" / "last.ckpt"
    if last.is_file() and torch.load(last, map_location="cpu", weights_only=True)["global_step"] >= steps:
        return last
    with quiet_lightning():
        lightning_cli(
            [
                "fit",
                "--model", str(REPO_ROOT / "configs" / "model" / "vae_demo.yaml"),
                "--data", str(SYNTHETIC),
                "--trainer", str(REPO_ROOT / "configs" / "trainer" / "vae_cpu.yaml"),
                "--trainer.max_steps", str(steps),
                "--trainer.enable_model_summary", "false",
                "--trainer.default_root_dir", str(root),
                "--seed_everything", "0",
                *_data_overrides(spec),
                *(["--ckpt_path", str(last)] if last.is_file() else []),
            ]
        )  # fmt: skip
    return last


def cache_demo_latents(vae_checkpoint: Path, spec: str, cache: Path) -> Path:
    """Encode the grid's clips once with the demo VAE (resuming a partial cache, reusing a finished one)."""
    data = ["--data", str(SYNTHETIC), *_data_overrides(spec)]
    cache_latents([*data, "--vae", str(vae_checkpoint), "--out", str(cache)])
    return cache


def latent_spec(spec: str, vae_checkpoint: Path, cache: Path, out: Path) -> str:
    """A copy of the grid spec whose runs train from the latent ``cache`` of ``vae_checkpoint``."""
    grid = yaml.safe_load(Path(spec).read_text())
    grid["name"] = f"{grid['name']}_latent"
    grid["base"]["data"] = str(REPO_ROOT / "configs" / "data" / "latent_cache.yaml")
    grid["base"].setdefault("overrides", {}).update(
        {
            "data.init_args.cache_dir": str(cache.resolve()),
            "data.init_args.frame_interval": None,  # the cache's own (checked: frames, height, width)
            "data.init_args.num_workers": 0,
            "model.init_args.vae_checkpoint": str(vae_checkpoint.resolve()),
            "model.init_args.denoiser.init_args.patch_size": [1, 1, 1],
        }
    )
    path = out / "grid_latent.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return str(path)
