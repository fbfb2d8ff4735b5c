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
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Subset

from lit_vdit.build import lightning_cli, quiet_lightning
from lit_vdit.data.datamodule import VideoDataModule
from lit_vdit.io import atomic_write_json, atomic_write_text, fingerprint
from lit_vdit.metrics import (
    Protocol,
    Shard,
    check_protocol_feasible,
    check_weights_available,
    compute_video_metrics,
    metrics_row,
)
from lit_vdit.parallel import SequenceParallelStrategy


def evaluation_prompts(
    module: L.LightningModule, datamodule: VideoDataModule, real_split: str = "val"
) -> list[str] | None:
    """What a text-conditional module's samples are generated from: the captions of the real clips of
    ``real_split``, in turn (None for a class-conditional or unconditional module)."""
    if module.encoder is None:
        return None
    prompts = datamodule.split_captions(real_split)
    if not prompts:
        raise ValueError(
            f"a text-conditional model is evaluated on the captions of the real {real_split} clips, and "
            f"this data has none: give the data captions (a manifest or caption_template)"
        )
    return prompts


def run_protocol(
    module: L.LightningModule,
    datamodule: VideoDataModule,
    num_videos: int,
    real_split: str = "val",
    prompts: list[str] | None = None,
) -> Protocol:
    """The protocol of a run's evaluation: dataset and its identity, clip shape, sampler, steps, guidance,
    and the prompts generated from (``prompts``, when the caller has read them: else
    :func:`evaluation_prompts`)."""
    reals = len(datamodule.real_videos(real_split))
    prompts = prompts if prompts is not None else evaluation_prompts(module, datamodule, real_split)
    identity = datamodule.identity(real_split)
    _, frames, height, width = datamodule.clip_shape
    return Protocol(
        dataset=identity["source"],
        dataset_id=fingerprint(identity),
        real_split=real_split,
        num_real=min(num_videos, reals),
        num_fake=num_videos,
        frames=frames,
        stride=datamodule.frame_interval,
        resolution=f"{height}x{width}",
        sampler=type(module.sampler).__name__,
        steps=module.sampler.steps,
        guidance=module.hparams.guidance_scale,
        prompts=fingerprint(prompts[:num_videos]) if prompts else "",
        kid_subset_size=min(1000, num_videos, reals),
    )


def process_shard(trainer: L.Trainer | None) -> Shard:
    """This process's part of an evaluation under the trainer's strategy (the whole of it on one)."""
    if trainer is None or trainer.world_size == 1:
        return Shard()
    strategy = trainer.strategy
    if isinstance(strategy, SequenceParallelStrategy):
        raise ValueError(
            "video metrics during a sequence-parallel run are not supported: evaluate its checkpoint with "
            "`lit-vdit eval` on one device or a data-parallel strategy"
        )
    return Shard(
        trainer.global_rank, trainer.world_size, lambda t: strategy.all_gather(t.to(strategy.root_device))
    )


def generated_clips(
    module: L.LightningModule,
    indices: Sequence[int],
    batch_size: int,
    seed: int = 0,
    prompts: list[str] | None = None,
) -> Iterator[torch.Tensor]:
    """EMA samples number ``indices`` (noise seed and class label from the index: the classes in turn;
    with ``prompts``, prompt ``i % len(prompts)``); lazy, batch by batch."""
    classes = max(module.hparams.num_classes or 1, 1)
    for start in range(0, len(indices), batch_size):
        chunk = list(indices[start : start + batch_size])
        labels = torch.tensor([i % classes for i in chunk])
        captions = [prompts[i % len(prompts)] for i in chunk] if prompts else None
        yield module.generate(labels, [seed * 1_000_003 + i for i in chunk], captions=captions).cpu()


def real_clips(
    datamodule: VideoDataModule, split: str, indices: Sequence[int], batch_size: int
) -> Iterator[torch.Tensor]:
    """Real clips number ``indices`` of ``split``; lazy (a cache hit reads no video)."""
    videos = datamodule.real_videos(split)
    last = len(videos) - 1  # indices past the set pad the last process's block (dropped after the gather)
    subset = Subset(videos, [min(i, last) for i in indices])
    for batch in DataLoader(subset, batch_size=batch_size, num_workers=datamodule.num_workers):
        yield batch["video"]


def evaluate_module(
    module: L.LightningModule,
    datamodule: VideoDataModule,
    metrics: Sequence[str],
    num_videos: int,
    batch_size: int = 8,
    real_split: str = "val",
    cache_dir: str | None = None,
    shard: Shard | None = None,
    **weights: str | None,
) -> dict[str, dict[str, Any]]:
    """Metrics of ``num_videos`` EMA samples against the real clips; on several processes (``shard``)
    each generates its block of the samples and every process returns the same values."""
    prompts = evaluation_prompts(module, datamodule, real_split)
    protocol = run_protocol(module, datamodule, num_videos, real_split, prompts)
    shard = shard or Shard()
    was_training = module.training
    module.eval()
    try:
        return compute_video_metrics(
            real_clips(datamodule, real_split, shard.indices(protocol.num_real), batch_size),
            generated_clips(module, shard.indices(num_videos), batch_size, prompts=prompts),
            protocol,
            metrics,
            cache_dir=cache_dir,
            device=module.device,
            batch_size=batch_size,
            shard=shard,
            **weights,
        )
    finally:
        module.train(was_training)


class VideoMetrics(Callback):
    """FVD / FID / KID / IS of EMA samples at ``steps`` (default: the final step), in video_metrics.csv;
    in ``validate`` (and ``lit-vdit eval``) once, for the checkpoint validated, in :attr:`results`.

    Under DDP / FSDP each process generates its share of the videos (:func:`process_shard`) and
    the features are gathered: the same values as one process, in about 1/N of the time.

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
        self.results: dict[str, dict[str, Any]] = {}

    def check(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Fail before any training or sampling when a weights file is missing or the protocol impossible."""
        check_weights_available(self.metrics, **self.weights)
        check_protocol_feasible(
            self.metrics, run_protocol(pl_module, trainer.datamodule, self.num_videos, self.real_split)
        )

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, dict[str, Any]]:
        return evaluate_module(
            pl_module,
            trainer.datamodule,
            self.metrics,
            self.num_videos,
            self.batch_size,
            self.real_split,
            self.cache_dir,
            process_shard(trainer),
            **self.weights,
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer, pl_module)
        self.steps.add(trainer.max_steps)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.check(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self.results = self.evaluate(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step not in self.steps or any(row["step"] == step for row in self.rows):
            return
        results = self.evaluate(trainer, pl_module)
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
    """``lit-vdit eval --ckpt CKPT --model M.yaml --data D.yaml [--trainer T.yaml] --metrics fvd,fid``.

    The checkpoint is restored as ``validate`` restores it (Trainer.validate with ``ckpt_path``:
    the module's own checks, e.g. of the VAE it was trained with, and sharded checkpoints), then
    the :class:`VideoMetrics` of the samples are computed, split across the trainer's processes.
    """
    parser = argparse.ArgumentParser(prog="lit-vdit eval", description=__doc__)
    parser.add_argument("--ckpt", required=True, help="a DiffusionModule checkpoint (last.ckpt)")
    parser.add_argument("--model", required=True, help="the run's model YAML")
    parser.add_argument("--data", required=True, help="the run's data YAML")
    parser.add_argument(
        "--trainer", help="trainer YAML (default: one device); configs/trainer/ddp_gpu.yaml splits the videos"
    )
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
    if not Path(args.ckpt).exists():
        raise SystemExit(f"lit-vdit eval: checkpoint {args.ckpt} not found")

    callback = {
        "class_path": f"{VideoMetrics.__module__}.VideoMetrics",
        "init_args": {
            "metrics": metrics,
            "num_videos": args.num_videos,
            "batch_size": args.batch_size,
            "real_split": args.real_split,
            "cache_dir": args.cache_dir,
            **weights,
        },
    }
    trainer = ["--trainer", args.trainer] if args.trainer else ["--trainer.devices", "1"]
    cli = lightning_cli(
        ["--model", args.model, "--data", args.data, *trainer, "--trainer.logger", "false",
         "--trainer.enable_progress_bar", "false", *overrides, "--trainer.callbacks+", json.dumps(callback)],
        run=False,
        save_config=False,  # eval reads a run: no config.yaml written into the working directory
    )  # fmt: skip
    with quiet_lightning():
        cli.trainer.validate(
            cli.model, datamodule=cli.datamodule, ckpt_path=args.ckpt, verbose=False, weights_only=True
        )
    evaluator = next(c for c in cli.trainer.callbacks if isinstance(c, VideoMetrics))
    if cli.trainer.is_global_zero:
        text = json.dumps(evaluator.results, indent=2)
        if args.out:
            atomic_write_text(args.out, text + "\n")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
