"""MFU of a real training run: ``lit-vdit fit`` under FSDP2 (or sequence parallelism) with compiled
blocks, as ``lit_vdit.callbacks.ThroughputMonitor`` logs it (run by hand; one fit per invocation).

    python benchmarks/bench_run_mfu.py --out /tmp/mfu --device cuda --preset XL/2 --clip 16 32 32 \\
        --patch 1 2 2 --batch 8 --compile --flash --peak-tflops 989
    python benchmarks/bench_run_mfu.py --out /tmp/mfu_sp --device cuda --strategy sp --devices 2 ...
    python benchmarks/bench_run_mfu.py --out /tmp/mfu_cpu --preset T0 --clip 4 16 16 --patch 1 4 4

The run is the runs' own path (DiffusionModule: EMA, bf16-mixed FSDP2, per-block compile, the
accounting's FLOPs) on synthetic 3-channel clips (16x32x32 at patch 1x2x2: 4,096 tokens) from
configs/trainer/{fsdp2,sp}_{gpu,cpu}.yaml with ``--devices`` processes, its callbacks replaced by the
throughput monitor alone (``available_tflops: measured``: MFU against a dense matmul timed in the
run's dtype on each device). ``--flash`` leaves only the flash kernel to scaled-dot-product attention,
so the run fails rather than falls back. Prints the last window's samples/s, TFLOP/s per device, MFU
against the measured matmul and against ``--peak-tflops``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml

from lit_vdit.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
FLASH_ONLY = "LIT_VDIT_BENCH_FLASH_ONLY"


def trainer_config(args: argparse.Namespace) -> Path:
    """The strategy's trainer config on ``--devices`` processes with only the throughput monitor."""
    kind = "gpu" if args.device == "cuda" else "cpu"
    config = yaml.safe_load((REPO / "configs" / "trainer" / f"{args.strategy}_{kind}.yaml").read_text())
    config.update(devices=args.devices, max_steps=args.steps, log_every_n_steps=1)
    config.update(enable_checkpointing=False, enable_progress_bar=False, default_root_dir=str(args.out))
    init = config["strategy"]["init_args"]
    if "data_parallel_size" in init:
        init["data_parallel_size"] = args.devices
    config["callbacks"] = [
        {
            "class_path": "lit_vdit.callbacks.ThroughputMonitor",
            "init_args": {"window_size": args.window, "available_tflops": "measured"},
        }
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "trainer.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def flash_only() -> None:
    """Only the flash kernel for scaled-dot-product attention, when asked (process-wide)."""
    if os.environ.get(FLASH_ONLY) == "1":
        torch.backends.cuda.enable_mem_efficient_sdp(False)
        torch.backends.cuda.enable_math_sdp(False)
        torch.backends.cuda.enable_cudnn_sdp(False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--strategy", choices=["fsdp2", "sp"], default="fsdp2")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--preset", default="XL/2")
    parser.add_argument("--clip", nargs=3, type=int, default=[16, 32, 32], metavar=("T", "H", "W"))
    parser.add_argument("--patch", nargs=3, type=int, default=[1, 2, 2])
    parser.add_argument("--batch", type=int, default=8, help="clips per process (per group under sp)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--window", type=int, default=10, help="batches in the throughput average")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--flash", action="store_true", help="allow only the flash attention kernel")
    parser.add_argument("--peak-tflops", type=float, default=None, help="datasheet peak for a second ratio")
    args = parser.parse_args()
    if args.flash:
        os.environ[FLASH_ONLY] = "1"  # for the processes Lightning starts too
    flash_only()
    frames, height, width = args.clip
    cli_main([
        "fit",
        "--trainer", str(trainer_config(args)),
        "--seed_everything", "0",
        "--model", str(REPO / "configs" / "model" / "dit_demo.yaml"),
        "--model.init_args.denoiser.init_args.preset", args.preset,
        "--model.init_args.denoiser.init_args.patch_size", str(args.patch),
        "--model.init_args.compile", str(args.compile).lower(),
        "--data", str(REPO / "configs" / "data" / "synthetic.yaml"),
        "--data.init_args.frames", str(frames),
        "--data.init_args.height", str(height),
        "--data.init_args.width", str(width),
        "--data.init_args.batch_size", str(args.batch),
        "--data.init_args.val_clips", "8",
    ])  # fmt: skip
    if int(os.environ.get("LOCAL_RANK", "0")) != 0:
        return
    logged = pd.read_csv(next(args.out.rglob("metrics.csv"))).dropna(subset=["train/device/mfu"])
    last = logged.iloc[-1]
    tflops = last["train/device/flops_per_sec"] / 1e12
    peak = f", {tflops / args.peak_tflops:.1%} of {args.peak_tflops:g} TFLOP/s" if args.peak_tflops else ""
    print(
        f"{args.preset} {args.strategy} x{args.devices} compile={args.compile} flash={args.flash} "
        f"batch {args.batch} clips {frames}x{height}x{width} patch {args.patch}: step {int(last['step'])}, "
        f"{last['train/device/samples_per_sec']:.2f} clips/s per device, {tflops:.2f} TFLOP/s per device, "
        f"MFU {last['train/device/mfu']:.1%} of the measured matmul{peak}"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["fit"]:  # a process Lightning's launcher started: it reruns the fit's arguments
        flash_only()
        cli_main(sys.argv[1:])
    else:
        main()
