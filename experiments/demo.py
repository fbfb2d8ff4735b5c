"""``lit-vdit demo``: a small scaling grid on the synthetic clips, samples, then fits and a report.

By default the DiTs train in pixel space. ``--latent`` first trains the demo VAE
(configs/model/vae_demo.yaml, 1x4x4 compression, 4 channels) and runs the same grid in its latent
space (patch 1x1x1, so the token count equals the pixel grid's), with samples decoded by the VAE.
Every step resumes: rerunning the demo skips finished runs and redoes only what is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from experiments.cli import main as grid_main
from lit_vdit.cli import main as cli_main

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-vdit demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output folder")
    parser.add_argument("--spec", default=str(REPO_ROOT / "experiments" / "demo.yaml"), help="grid spec")
    parser.add_argument("--workers", type=int, default=1, help="concurrent runs")
    parser.add_argument(
        "--latent", action="store_true", help="train the demo VAE, then the grid in its latent space"
    )
    parser.add_argument("--vae-steps", type=int, default=300, help="training steps of the demo VAE")
    args = parser.parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()

    spec, grid_dir, report_dir = args.spec, out / "grid", out / "report"
    if args.latent:  # its own folders: a runs.csv never mixes pixel- and latent-space runs
        spec = latent_spec(args.spec, train_demo_vae(out / "vae", args.spec, args.vae_steps), out)
        grid_dir, report_dir = out / "grid_latent", out / "report_latent"
    code = grid_main(["run", spec, "--out", str(grid_dir), "--workers", str(args.workers)])
    if code:
        print(f"demo: some runs failed; see `lit-vdit grid status {grid_dir}` and their log.txt")
        return code

    # Samples from the largest model of the grid (EMA weights, classifier-free guidance).
    runs = json.loads((grid_dir / "grid.json").read_text())["runs"]
    largest = max(runs, key=lambda run: run["params_non_embedding"])
    run_dir = grid_dir / "runs" / largest["run_id"]
    predict_args = [
        arg for key in ("model", "data", "trainer") for arg in (f"--{key}", largest["files"][key])
    ]
    for key, value in largest["overrides"].items():
        predict_args += [f"--{key}", json.dumps(value) if isinstance(value, list | dict) else str(value)]
    cli_main(
        [
            "predict",
            *predict_args,
            "--trainer.default_root_dir",
            str(run_dir),
            "--trainer.logger",
            "false",
            "--ckpt_path",
            str(run_dir / "checkpoints" / "last.ckpt"),
        ]
    )

    code = cli_main(["analyze", "report", str(grid_dir / "runs.csv"), "--out", str(report_dir)])
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s")
    print(f"  runs table : {grid_dir / 'runs.csv'}")
    print(f"  samples    : {run_dir / 'samples'} ({largest['name']})")
    print(f"  report     : {report_dir / 'report.html'}")
    return code


def train_demo_vae(root: Path, spec: str, steps: int) -> Path:
    """Train the demo VAE on the grid's clips under ``root`` (resuming, or reusing a finished one)."""
    last = root / "checkpoints" / "last.ckpt"
    if last.is_file() and torch.load(last, map_location="cpu", weights_only=True)["global_step"] >= steps:
        return last
    overrides = yaml.safe_load(Path(spec).read_text())["base"].get("overrides", {})
    data = [arg for key, value in overrides.items() if key.startswith("data.")
            for arg in (f"--{key}", str(value))]  # fmt: skip
    cli_main(
        [
            "fit",
            "--model", str(REPO_ROOT / "configs" / "model" / "vae_demo.yaml"),
            "--data", str(REPO_ROOT / "configs" / "data" / "synthetic.yaml"),
            "--trainer", str(REPO_ROOT / "configs" / "trainer" / "vae_cpu.yaml"),
            "--trainer.max_steps", str(steps),
            "--trainer.default_root_dir", str(root),
            "--seed_everything", "0",
            *data,
            *(["--ckpt_path", str(last)] if last.is_file() else []),
        ]
    )  # fmt: skip
    return last


def latent_spec(spec: str, vae_checkpoint: Path, out: Path) -> str:
    """A copy of the grid spec whose runs train in the latent space of ``vae_checkpoint``."""
    grid = yaml.safe_load(Path(spec).read_text())
    grid["name"] = f"{grid['name']}_latent"
    grid["base"].setdefault("overrides", {}).update(
        {
            "model.init_args.vae_checkpoint": str(vae_checkpoint.resolve()),
            "model.init_args.denoiser.init_args.patch_size": [1, 1, 1],
        }
    )
    path = out / "grid_latent.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return str(path)
