"""Sample-quality evaluation inside runs and on the command line: FVD, frame FID/KID/IS.

``VideoMetrics`` (a callback) samples videos with the EMA weights at chosen steps and writes
``video_metrics.csv`` (one row per step, each value beside its protocol id; ``grid collect`` joins
it into runs.csv). ``lit-vdit eval`` does the same once for a checkpoint. Weights and the protocol's
feasibility are checked before any video is generated.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from lit_vdit.io import atomic_write_json, atomic_write_text
from lit_vdit.metrics import (
    Protocol,
    check_protocol_feasible,
    check_weights_available,
    compute_video_metrics,
    metrics_row,
)


def real_set(datamodule: Any, split: str) -> Dataset:
    return datamodule.val_set if split == "val" else datamodule.train_set


def run_protocol(
    module: L.LightningModule, datamodule: Any, num_videos: int, real_split: str = "val"
) -> Protocol:
    """The protocol of a run's evaluation: dataset, clip shape, sampler, steps and guidance."""
    reals = len(real_set(datamodule, real_split))
    _, frames, height, width = datamodule.clip_shape
    return Protocol(
        dataset=type(datamodule).__name__,
        real_split=real_split,
        num_real=min(num_videos, reals),
        num_fake=num_videos,
        frames=frames,
        stride=getattr(datamodule, "frame_interval", 1),
        resolution=f"{height}x{width}",
        sampler=type(module.sampler).__name__,
        steps=getattr(module.sampler, "steps", 0),
        guidance=module.hparams.guidance_scale,
        kid_subset_size=min(1000, num_videos, reals),
    )


def generated_clips(
    module: L.LightningModule, num_videos: int, batch_size: int, seed: int = 0
) -> Iterator[torch.Tensor]:
    """Videos from the EMA weights, class labels cycling through the classes; lazy, batch by batch."""
    classes = max(module.hparams.num_classes or 1, 1)
    for start in range(0, num_videos, batch_size):
        indices = list(range(start, min(start + batch_size, num_videos)))
        labels = torch.tensor([i % classes for i in indices])
        yield module.generate(labels, [seed * 1_000_003 + i for i in indices]).cpu()


def real_clips(datamodule: Any, split: str, batch_size: int) -> Iterator[torch.Tensor]:
    for batch in DataLoader(real_set(datamodule, split), batch_size=batch_size):
        yield batch["video"]


def evaluate_module(
    module: L.LightningModule,
    datamodule: Any,
    metrics: Sequence[str],
    num_videos: int,
    batch_size: int = 8,
    real_split: str = "val",
    cache_dir: str | None = None,
    **weights: str | None,
) -> dict[str, dict[str, Any]]:
    protocol = run_protocol(module, datamodule, num_videos, real_split)
    was_training = module.training
    module.eval()
    try:
        return compute_video_metrics(
            real_clips(datamodule, real_split, batch_size),
            generated_clips(module, num_videos, batch_size),
            protocol,
            metrics,
            cache_dir=cache_dir,
            device=module.device,
            batch_size=batch_size,
            **weights,
        )
    finally:
        module.train(was_training)


class VideoMetrics(Callback):
    """FVD / FID / KID / IS of EMA samples at ``steps`` (default: the final step), in video_metrics.csv.

    Args:
        metrics: any of fvd, kvd, fid, kid, is.
        steps: training steps to evaluate at (the final step is always included).
        num_videos: generated clips (and real clips, from ``real_split``) per evaluation.
        cache_dir: where real-data features are cached per dataset and protocol.
        i3d_path, inception_path: network files (else the env vars / packaged weights).
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("fvd", "fid"),
        steps: Sequence[int] = (),
        num_videos: int = 256,
        batch_size: int = 8,
        real_split: str = "val",
        cache_dir: str | None = None,
        i3d_path: str | None = None,
        inception_path: str | None = None,
    ) -> None:
        self.metrics, self.steps, self.num_videos = tuple(metrics), set(steps), num_videos
        self.batch_size, self.real_split, self.cache_dir = batch_size, real_split, cache_dir
        self.weights = {"i3d_path": i3d_path, "inception_path": inception_path}
        self.rows: list[dict[str, Any]] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Fail now, not after hours of training, when a weights file is missing or the protocol impossible.
        check_weights_available(self.metrics, **self.weights)
        trainer.datamodule.setup("fit")
        check_protocol_feasible(
            self.metrics, run_protocol(pl_module, trainer.datamodule, self.num_videos, self.real_split)
        )
        self.steps.add(trainer.max_steps)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step not in self.steps or any(row["step"] == step for row in self.rows):
            return
        results = evaluate_module(
            pl_module,
            trainer.datamodule,
            self.metrics,
            self.num_videos,
            self.batch_size,
            self.real_split,
            self.cache_dir,
            **self.weights,
        )
        self.rows.append({"step": step, **metrics_row(results)})
        if trainer.is_global_zero:
            buffer = io.StringIO()
            writer = csv.DictWriter(
                buffer, fieldnames=list(dict.fromkeys(k for row in self.rows for k in row))
            )
            writer.writeheader()
            writer.writerows(self.rows)
            out = Path(trainer.default_root_dir)
            atomic_write_text(out / "video_metrics.csv", buffer.getvalue())
            atomic_write_json(
                out / "video_metrics_protocols.json", {m: r["protocol"] for m, r in results.items()}
            )

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


def main(argv: list[str] | None = None) -> int:
    """``lit-vdit eval --ckpt CKPT --model M.yaml --data D.yaml --metrics fvd,fid``."""
    parser = argparse.ArgumentParser(prog="lit-vdit eval", description=__doc__)
    parser.add_argument("--ckpt", required=True, help="a DiffusionModule checkpoint (last.ckpt)")
    parser.add_argument("--model", required=True, help="the run's model YAML")
    parser.add_argument("--data", required=True, help="the run's data YAML")
    parser.add_argument("--metrics", default="fvd,fid", help="comma-separated: fvd,kvd,fid,kid,is")
    parser.add_argument("--num-videos", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--real-split", choices=["val", "train"], default="val")
    parser.add_argument("--cache-dir", default=os.path.expanduser("~/.cache/lit_vdit/real_features"))
    parser.add_argument("--i3d-path")
    parser.add_argument("--inception-path")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.epilog = "Other arguments are LightningCLI overrides, e.g. --data.init_args.frames 16"
    args, overrides = parser.parse_known_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    weights = {"i3d_path": args.i3d_path, "inception_path": args.inception_path}
    check_weights_available(metrics, **weights)
    if not Path(args.ckpt).is_file():
        raise SystemExit(f"lit-vdit eval: checkpoint {args.ckpt} not found")

    from lit_vdit.cli import lightning_cli

    cli = lightning_cli(
        ["--model", args.model, "--data", args.data, "--trainer.logger", "false", *overrides], run=False
    )
    module, datamodule = cli.model, cli.datamodule
    datamodule.setup("fit")
    if module.denoiser is None:
        module.build(datamodule.clip_shape, datamodule.num_classes)
    checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=True)
    module.load_state_dict(checkpoint["state_dict"])
    results = evaluate_module(
        module,
        datamodule,
        metrics,
        args.num_videos,
        args.batch_size,
        args.real_split,
        args.cache_dir,
        **weights,
    )
    text = json.dumps(results, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
