"""The GPU trainer configs on one CUDA device: each fits, checkpoints and resumes (run by hand on a GPU).

    python benchmarks/gpu_strategies.py --out /tmp/gpu_strategies [--configs ddp_gpu fsdp_gpu fsdp2_gpu]

For every configs/trainer/<name>.yaml: a run of ``--steps`` steps, and the same run stopped at half
way and resumed from its checkpoint (sharded folders for FSDP / FSDP2). Prints per config and
precision the step time, the final train and validation losses, and the largest relative difference
between the resumed and the uninterrupted loss curves (bf16 kernels are not bit-reproducible, so
this is a measurement, not an assertion). ``--precisions`` adds e.g. 32-true beside bf16-mixed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
MODEL = [
    "--seed_everything", "0",
    "--model", "configs/model/dit_demo.yaml",
    "--model.init_args.denoiser.init_args.class_dropout_prob", "0.0",
    "--data", "configs/data/synthetic.yaml",
    "--data.init_args.frames", "8",
    "--data.init_args.height", "32",
    "--data.init_args.width", "32",
    "--data.init_args.batch_size", "32",
    "--trainer.devices", "1",
    "--trainer.enable_progress_bar", "false",
    "--trainer.log_every_n_steps", "1",
]  # fmt: skip


def trainer_config(name: str, out: Path, precision: str, checkpoint_every: int) -> Path:
    """configs/trainer/<name>.yaml on one device, checkpointing every ``checkpoint_every`` steps."""
    config = yaml.safe_load((REPO / "configs" / "trainer" / f"{name}.yaml").read_text())
    config["precision"] = precision
    strategy = config.get("strategy")
    if isinstance(strategy, dict) and "data_parallel_size" in strategy.get("init_args", {}):
        strategy["init_args"]["data_parallel_size"] = 1
    for callback in config["callbacks"]:
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"]["every_n_train_steps"] = checkpoint_every
    out.mkdir(parents=True, exist_ok=True)
    path = out / "trainer.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(out: Path, trainer: Path, preset: str, steps: int, *extra: str) -> float:
    command = [
        sys.executable,
        "-m",
        "lit_vdit.cli",
        "fit",
        "--trainer",
        str(trainer),
        *MODEL,
        "--model.init_args.denoiser.init_args.preset",
        preset,
        "--trainer.max_steps",
        str(steps),
        "--trainer.default_root_dir",
        str(out),
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def losses(run: Path) -> pd.Series:
    logged = pd.read_csv(run / "csv" / "metrics.csv").dropna(subset=["train/loss"])
    return logged.groupby("step")["train/loss"].last()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--configs", nargs="+", default=["ddp_gpu", "fsdp_gpu", "fsdp2_gpu"])
    parser.add_argument("--precisions", nargs="+", default=["bf16-mixed"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--preset", default="T7", help="DiT preset (T7: 5.6M parameters at these clips)")
    args = parser.parse_args()
    half = args.steps // 2
    rows = []
    for name in args.configs:
        for precision in args.precisions:
            root = args.out / f"{name}_{precision}"
            trainer = trainer_config(name, root, precision, half)
            seconds = fit(root / "full", trainer, args.preset, args.steps)
            fit(root / "resumed", trainer, args.preset, half)
            before = losses(root / "resumed")  # Lightning's CSVLogger starts its file afresh on resume
            checkpoint = root / "resumed" / "checkpoints" / "last.ckpt"
            fit(root / "resumed", trainer, args.preset, args.steps, "--ckpt_path", str(checkpoint))
            full, resumed = losses(root / "full"), pd.concat([before, losses(root / "resumed")])
            metrics = pd.read_csv(root / "full" / "metrics.csv").iloc[-1]
            rows.append({
                "config": name,
                "precision": precision,
                "fit_s": round(seconds, 1),
                "first_loss": round(float(full.iloc[0]), 4),
                "final_loss": round(float(full.iloc[-1]), 4),
                "val_loss_ema": round(float(metrics["val_loss_ema"]), 4),
                "checkpoint": "folder" if checkpoint.is_dir() else "file",
                "resume_steps_equal": list(resumed.index) == list(full.index),
                "resume_max_rel_diff": float(((resumed - full).abs() / full.abs()).max()),
            })  # fmt: skip
            print(rows[-1], flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
