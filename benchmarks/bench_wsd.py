"""The same small Chinchilla study two ways: independent cosine runs vs WSD cooldown branches.

Each size trains at every step budget. Baseline: one cosine run per (size, budget) from step 0
(Hoffmann et al.). WSD: one constant-rate trunk per size and a 20% 1-sqrt cooldown branch per budget
(Hägele et al. 2024; ``experiments.cooldown``). Printed: the training FLOPs each way (the study's,
with shared prefixes counted once) and their ratio, the fitted L(N, D) exponents of each with
bootstrap intervals, and every point's final validation loss both ways.

    python benchmarks/bench_wsd.py                      # 3 sizes x 5 budgets, 2 workers
    python benchmarks/bench_wsd.py --out runs/bench_wsd --workers 2

Reruns resume: finished runs are skipped.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import yaml

from analysis.data import prepare
from analysis.laws import chinchilla_law
from analysis.report import estimate_text
from analysis.study import fit_law
from experiments.cli import run_grid
from experiments.collect import collect
from experiments.cooldown import study_flops
from experiments.grid import load_spec
from experiments.plan import plan

REPO = Path(__file__).resolve().parents[1]
SIZES = {"T2": 1.6e-2, "T3": 1.07e-2, "T4": 8.0e-3}  # lr = 0.512 / d_model, as the demo (demo.yaml)
STEPS = [100, 200, 300, 400, 500]  # linear budgets: the cooldowns are a small share of the trunk
WARMUP = 10  # shared by every run of a size (a branch shares its trunk's warm-up)
COOLDOWN = {"fraction": 0.2, "shape": "1-sqrt"}


def spec(name: str, schedule: dict) -> dict:
    """The demo's data and models at fixed step budgets."""
    return {
        "name": name,
        "base": {
            "model": "configs/model/dit_demo.yaml",
            "data": "configs/data/synthetic.yaml",
            "trainer": "configs/trainer/cpu.yaml",
            "overrides": {
                "seed": 0,
                "batch_size": 16,
                "warmup_steps": WARMUP,
                "data.init_args.frames": 4,
                "data.init_args.height": 16,
                "data.init_args.width": 16,
                "data.init_args.val_clips": 32,
                "model.init_args.val_timesteps": 4,
                "model.init_args.denoiser.init_args.patch_size": [1, 4, 4],
                "model.init_args.ema_decay": 0.0,
                "trainer.enable_progress_bar": False,
                "trainer.enable_model_summary": False,
                **schedule.get("overrides", {}),
            },
        },
        "axes": {"preset": list(SIZES), "steps": STEPS},
        "derived": {"lr": {"by": "preset", "values": SIZES}},
        **({"cooldown": schedule["cooldown"]} if "cooldown" in schedule else {}),
    }


SCHEDULES = {
    "cosine": {"overrides": {"model.init_args.lr_schedule": "cosine", "model.init_args.min_lr_ratio": 0.1}},
    "wsd": {"overrides": {"model.init_args.min_lr_ratio": 0.0}, "cooldown": COOLDOWN},
}


def run(out: Path, name: str, workers: int) -> tuple[pd.DataFrame, float]:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec(name, SCHEDULES[name])))
    tic = time.perf_counter()
    planned = plan(load_spec(path))
    failed = run_grid(path, out / name, planned, workers=workers)
    if failed:
        raise SystemExit(f"{name}: runs failed: {failed} (see {out / name / 'runs'}/<id>/log.txt)")
    return collect(out / name), time.perf_counter() - tic


def exponents(table: pd.DataFrame) -> dict[str, str]:
    roles = {"N": "params_non_embedding", "D": "tokens_seen", "C": "flops_measured", "y": "val_loss_raw"}
    points = prepare(table, roles, points="final", run="run_id", step="step")
    law = fit_law(chinchilla_law(), points, {"N": "N", "D": "D"}, n_boot=1000)
    return {k: estimate_text(law.intervals[k]) for k in ("alpha", "beta", "E")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/bench_wsd")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    out = Path(args.out)
    tables, walls = {}, {}
    for name in SCHEDULES:
        tables[name], walls[name] = run(out, name, args.workers)
    costs = {name: study_flops(table)["trained"] for name, table in tables.items()}
    print(f"\nsizes {', '.join(SIZES)} x step budgets {STEPS} (batch 16), 2-core CPU")
    for name in SCHEDULES:
        laws = exponents(tables[name])
        print(
            f"{name:7s} training FLOPs {costs[name]:.3e}  wall {walls[name]:.0f} s  "
            + "  ".join(f"{k} {v}" for k, v in laws.items())
        )
    print(f"FLOPs ratio cosine / wsd: {costs['cosine'] / costs['wsd']:.2f}x")
    finals = {
        name: t.sort_values("step")
        .groupby("name")
        .tail(1)
        .set_index("name")[["preset", "step", "val_loss_raw"]]
        for name, t in tables.items()
    }
    both = finals["cosine"].join(finals["wsd"]["val_loss_raw"].rename("wsd"), how="inner")
    both = both.rename(columns={"val_loss_raw": "cosine"}).sort_values(["preset", "step"])
    both["diff_%"] = 100 * (both["wsd"] / both["cosine"] - 1)
    print(both.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"mean |diff| {both['diff_%'].abs().mean():.2f}%, mean diff {both['diff_%'].mean():+.2f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
