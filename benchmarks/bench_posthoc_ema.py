"""Post-hoc EMA against a directly tracked EMA of the same length (EDM2's check).

Trains the demo's T3 on the synthetic clips with power-function EMAs of sigma_rel 0.05, 0.10 and
0.075 (snapshots every 40 steps), reconstructs the 0.075 EMA from the 0.05 and 0.10 snapshots only
and prints its distance to the tracked one (relative to the distance between the tracked 0.075 and
the raw weights) and both validation losses, then the validation loss of a range of lengths.

    python benchmarks/bench_posthoc_ema.py [--out runs/bench_posthoc_ema] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lit_vdit.cli import main as cli_main
from lit_vdit.modules.posthoc_ema import reconstruct
from lit_vdit.posthoc import load_run, load_snapshots, validation_loss

TRACKED, BASIS = 0.075, [0.05, 0.1]


def distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return sum(float((a[k].double() - b[k].double()).norm() ** 2) for k in a) ** 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_posthoc_ema")
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args(argv)
    run = Path(args.out)
    result = run / "result.json"
    if not (result.is_file() and json.loads(result.read_text()).get("finished")):
        cli_main([
            "fit", "--model", "configs/model/dit_demo.yaml", "--data", "configs/data/synthetic.yaml",
            "--trainer", "configs/trainer/cpu.yaml", "--trainer.default_root_dir", str(run),
            "--trainer.max_steps", str(args.steps), "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--seed_everything", "0",
            "--data.init_args.frames", "4", "--data.init_args.height", "16", "--data.init_args.width", "16",
            "--data.init_args.batch_size", "16", "--data.init_args.val_clips", "32",
            "--model.init_args.denoiser.init_args.preset", "T3",
            "--model.init_args.denoiser.init_args.patch_size", "[1, 4, 4]",
            "--model.init_args.lr", "1.07e-2", "--model.init_args.warmup_steps", "20",
            "--model.init_args.val_timesteps", "4", "--model.init_args.ema_decay", "0",
            "--model.init_args.posthoc_ema", str([*BASIS, TRACKED]),
            "--model.init_args.ema_snapshot_every", str(args.steps // 10),
        ])  # fmt: skip
    snapshots = load_snapshots(run)
    step, last = snapshots[-1]
    rebuilt, coefficients = reconstruct(snapshots, TRACKED, profiles=BASIS)
    tracked = last[repr(TRACKED)]
    cli = load_run(run)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    raw = {k: ckpt[f"denoiser.{k}"].float() for k in tracked}
    print(f"T3, {step} steps: sigma_rel {TRACKED} tracked, rebuilt from {BASIS} ({len(coefficients)} terms)")
    relative = distance(rebuilt, tracked) / distance(tracked, raw)
    print(f"weights: |rebuilt - tracked| / |tracked - raw| = {relative:.4f}")
    losses = {
        name: validation_loss(cli, w)
        for name, w in (("raw", raw), ("tracked", tracked), ("rebuilt", rebuilt))
    }
    print("val loss: " + ", ".join(f"{k} {v:.5f}" for k, v in losses.items()))
    print(f"rebuilt / tracked - 1 = {losses['rebuilt'] / losses['tracked'] - 1:+.2e}")
    for sigma_rel in (0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25):
        loss = validation_loss(cli, reconstruct(snapshots, sigma_rel)[0])
        print(f"  sigma_rel {sigma_rel:<5g} val loss {loss:.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
