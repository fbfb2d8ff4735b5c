"""``lit-vdit posthoc-ema RUN_DIR``: the validation loss of EMAs of any length, reconstructed after
training from the run's power-function EMA snapshots (:mod:`lit_vdit.modules.posthoc_ema`).

The run must have trained with ``model.init_args.posthoc_ema`` (the sigma_rel of the profiles it
keeps) and ``model.init_args.ema_snapshot_every``. For each requested sigma_rel the reconstructed
weights are evaluated with the run's own low-variance validation loss (fixed clips, noise and
timesteps); ``RUN_DIR/posthoc_ema.csv`` gets one row per length, and ``--record`` stores the best in
``result.json``, from where ``grid collect`` puts it in ``runs.csv`` (``val_loss_posthoc_ema``,
``posthoc_sigma_rel``).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml
from lightning.pytorch.cli import LightningCLI

from lit_vdit.build import lightning_cli, quiet_lightning
from lit_vdit.io import atomic_write_json, atomic_write_text
from lit_vdit.modules.posthoc_ema import SNAPSHOTS, reconstruct


def load_snapshots(run_dir: Path) -> list[tuple[int, dict[str, dict[str, torch.Tensor]]]]:
    """Every ``(step, {sigma_rel: parameters})`` snapshot of a run, in step order."""
    files = sorted((run_dir / SNAPSHOTS).glob("step=*.pt"))
    if not files:
        raise SystemExit(
            f"lit-vdit posthoc-ema: no EMA snapshots in {run_dir / SNAPSHOTS}: train with "
            "--model.init_args.posthoc_ema '[0.05, 0.1]' --model.init_args.ema_snapshot_every K"
        )
    snapshots = []
    for path in files:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        snapshots.append((int(saved["step"]), saved["profiles"]))
    return snapshots


def _run_config(run_dir: Path) -> Path:
    for candidate in (
        run_dir / "config.yaml",
        run_dir / "tensorboard" / "config.yaml",
        run_dir / "csv" / "config.yaml",
    ):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"lit-vdit posthoc-ema: no config.yaml under {run_dir} (give --config)")


def load_run(run_dir: Path, config: Path | None = None) -> LightningCLI:
    """The run's module (built, untrained) and DataModule from its config, with a one-device Trainer."""
    saved = yaml.safe_load((config or _run_config(run_dir)).read_text())
    parts = [arg for key in ("model", "data", "trainer") for arg in (f"--{key}", json.dumps(saved[key]))]
    cli = lightning_cli(
        [
            *parts,
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.devices",
            "1",
        ],
        run=False,
        save_config=False,
    )
    if cli.model.denoiser is None:
        cli.model.build(cli.datamodule.clip_shape, cli.datamodule.num_classes)
    return cli


def validation_loss(cli: LightningCLI, weights: Mapping[str, torch.Tensor]) -> float:
    """The run's validation loss (fixed clips, noise and timesteps) of the denoiser with ``weights``."""
    cli.model.denoiser.load_state_dict(weights, strict=False)  # parameters; buffers are the config's
    with quiet_lightning():
        (metrics,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    return float(metrics["val/loss_raw"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lit-vdit posthoc-ema", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (default_root_dir of a fit)")
    parser.add_argument("--sigma-rel", type=float, nargs="+", default=[0.025, 0.05, 0.075, 0.1, 0.15, 0.2])
    parser.add_argument("--step", type=int, help="reconstruct at this step (default: the last snapshot)")
    parser.add_argument("--config", help="the run's config.yaml (default: found under RUN_DIR)")
    parser.add_argument("--record", action="store_true", help="store the best length in result.json")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    snapshots = load_snapshots(run_dir)
    step = args.step or snapshots[-1][0]
    cli = load_run(run_dir, Path(args.config) if args.config else None)
    rows = []
    for sigma_rel in args.sigma_rel:
        loss = validation_loss(cli, reconstruct(snapshots, sigma_rel, step)[0])
        rows.append({"sigma_rel": sigma_rel, "step": step, "val_loss": loss})
        print(f"sigma_rel {sigma_rel:<6g} step {step}: val loss {loss:.5f}")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["sigma_rel", "step", "val_loss"])
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run_dir / "posthoc_ema.csv", buffer.getvalue())
    best = min(rows, key=lambda row: row["val_loss"])
    print(f"best: sigma_rel {best['sigma_rel']:g} (val loss {best['val_loss']:.5f}); table posthoc_ema.csv")
    if args.record:
        result_path = run_dir / "result.json"
        result = json.loads(result_path.read_text())
        result["posthoc_ema"] = {**best, "profiles": sorted({float(k) for _, p in snapshots for k in p})}
        atomic_write_json(result_path, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
