"""Does the best learning rate transfer across widths? A learning-rate sweep of DiTs of several widths
under the standard parametrisation (SP) and under muP (``mup_base_width``, lit_vdit.models.mup).

Trains configs/model/dit_demo.yaml's DiT (class-conditioned, rectified flow) at each width (depth
``--depth``, head dim 16: heads grow with width) and learning rate (a factor-2 grid) on the synthetic
clips (4x16x16, patch 1x4x4, batch 16, 10% warm-up, cosine to 0.1x, no EMA) for ``--steps`` steps,
once under SP and once under muP anchored at the narrowest width (there the two are the same model:
trained once). Prints each run's final validation loss (raw weights; 64 fixed clips, noise and
timesteps), each width's best learning rate (on the grid, and the minimum of a quadratic in log2(lr)
through the best point and its neighbours) and the spread of the optimum across widths,
log2(max / min), for SP and muP. Reruns skip finished runs (and resume a killed one).

    python benchmarks/bench_mup_transfer.py [--out runs/bench_mup] [--steps 250] [--widths 32 64 128]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from lit_vdit.cli import main as cli_main

DIT = "--model.init_args.denoiser.init_args."
COMMON = [
    "--model", "configs/model/dit_demo.yaml", "--data", "configs/data/synthetic.yaml",
    "--trainer", "configs/trainer/cpu.yaml", "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false", "--seed_everything", "0", "--data.init_args.val_clips", "64",
    "--data.init_args.frames", "4", "--data.init_args.height", "16", "--data.init_args.width", "16",
    "--data.init_args.batch_size", "16", f"{DIT}patch_size", "[1, 4, 4]",
    "--model.init_args.val_timesteps", "4",
    "--model.init_args.lr_schedule", "cosine", "--model.init_args.min_lr_ratio", "0.1",
    "--model.init_args.ema_decay", "0.0",
]  # fmt: skip


def train(run: Path, width: int, depth: int, lr: float, steps: int, base: int | None) -> float:
    """The run's final validation loss (raw weights); inf if it diverged."""
    result, diverged = run / "result.json", run / "diverged"
    if not (result.is_file() and json.loads(result.read_text()).get("finished")) and not diverged.exists():
        last = run / "checkpoints" / "last.ckpt"
        mup = [f"{DIT}mup_base_width", str(base)] if base is not None else []
        try:
            cli_main(["fit", *COMMON, f"{DIT}hidden_size", str(width), f"{DIT}depth", str(depth),
                      f"{DIT}num_heads", str(width // 16), "--model.init_args.lr", str(lr), *mup,
                      "--model.init_args.warmup_steps", str(steps // 10), "--trainer.max_steps", str(steps),
                      "--trainer.default_root_dir", str(run),
                      *(["--ckpt_path", str(last)] if last.is_file() else [])])  # fmt: skip
        except FloatingPointError:  # a non-finite training loss: too high a learning rate
            diverged.touch()
    if diverged.exists():
        return math.inf
    return float(json.loads(result.read_text())["final"]["val_loss_raw"])


def optimum(lrs: list[float], losses: list[float]) -> tuple[float, float | None]:
    """The best grid lr, and the minimum of a quadratic in log2(lr) through the best point and its two
    neighbours (None at an edge of the grid or without a convex fit)."""
    best = int(np.argmin(losses))
    if best in (0, len(lrs) - 1) or not all(math.isfinite(v) for v in losses[best - 1 : best + 2]):
        return lrs[best], None
    x = np.log2(lrs[best - 1 : best + 2])
    a, b, _ = np.polyfit(x, losses[best - 1 : best + 2], 2)
    return lrs[best], (2.0 ** (-b / (2 * a)) if a > 0 else None)


def spread(values: list[float | None]) -> str:
    """log2(max / min) of the optima across widths ("-" if one is undetermined)."""
    if any(v is None for v in values):
        return "-"
    return f"{math.log2(max(values) / min(values)):.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_mup")
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--lrs", type=float, nargs="+", default=[2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2])
    args = parser.parse_args(argv)
    out, base, start = Path(args.out), min(args.widths), time.time()
    losses: dict[str, dict[int, list[float]]] = {"SP": {}, "muP": {}}
    for width in args.widths:
        for name, mup in (("SP", None), ("muP", base)):
            if name == "muP" and width == base:  # muP at its base width is the standard model
                losses["muP"][width] = losses["SP"][width]
                continue
            losses[name][width] = [
                train(out / f"{name}_w{width}_lr{lr:g}", width, args.depth, lr, args.steps, mup)
                for lr in args.lrs
            ]
    print(
        f"DiT depth {args.depth}, head dim 16, {args.steps} steps, batch 16, 4x16x16 clips; muP base {base}"
    )
    print("final validation loss (raw weights; inf: diverged)")
    print(f"{'lr':>8} " + " ".join(f"{f'{n} w{w}':>10}" for w in args.widths for n in losses))
    for i, lr in enumerate(args.lrs):
        print(f"{lr:>8g} " + " ".join(f"{losses[n][w][i]:>10.4f}" for w in args.widths for n in losses))
    print(f"{'':>6} {'width':>6} {'best lr':>9} {'quadratic':>10}")
    for name in losses:
        optima = [optimum(args.lrs, losses[name][w]) for w in args.widths]
        for width, (grid, fitted) in zip(args.widths, optima, strict=True):
            print(f"{name:>6} {width:>6} {grid:>9.2g} {f'{fitted:.3g}' if fitted else 'edge':>10}")
        grid_spread, fit_spread = spread([o[0] for o in optima]), spread([o[1] for o in optima])
        print(f"{name:>6} spread of the optimum, log2(max/min): grid {grid_spread}, quadratic {fit_spread}")
    print(f"wall time {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
