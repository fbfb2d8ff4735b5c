"""Callbacks: the per-run scaling record (metrics.csv, result.json), the checkpoint of the final
weights and the video writer for predict."""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import re
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch import callbacks
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype
from lightning.pytorch.strategies import FSDPStrategy, ModelParallelStrategy
from torch.utils.data import DataLoader, Subset

from lit_vdit import schema
from lit_vdit.data.buckets import BucketSampler, bucket_mix
from lit_vdit.data.datamodule import VideoDataModule, process_share
from lit_vdit.diffusion import timestep_shift
from lit_vdit.flops import matmul_flops_per_second
from lit_vdit.io import atomic_write_json, atomic_write_text
from lit_vdit.metrics.evaluate import process_block
from lit_vdit.models.mup import mup_base_width
from lit_vdit.models.text import encoder_name
from lit_vdit.video_io import write_video


def log_spaced_steps(max_steps: int, points: int) -> list[int]:
    """About ``points`` evaluation steps, logarithmically spaced in [1, max_steps], always with the last."""
    steps = np.unique(np.round(np.geomspace(1, max_steps, num=max(points, 1))).astype(int))
    return sorted({int(s) for s in steps} | {max_steps})


def environment() -> dict[str, str]:
    """Hardware and versions stored with every result."""
    hardware = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"cpu:{platform.processor() or platform.machine()}"
    )
    return {
        "hardware": hardware,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
    }


def validation_batches(trainer: L.Trainer) -> Iterator[tuple[Any, list[int], bool]]:
    """This process's share of the validation set, as (batch, global clip ids, counted) triples.

    The batches of the DataModule's validation loader are split into equal contiguous blocks, one per
    process (:func:`~lit_vdit.metrics.evaluate.process_block`, as the metrics deal their clips), so each
    clip is evaluated once and the sums over processes equal a single process's. Every process runs
    the same number of batches, because a sharded model's forward is collective: a padding position
    repeats the process's first batch, not counted.
    """
    loader = trainer.datamodule.val_dataloader()
    if isinstance(loader.sampler, BucketSampler):  # batches of one bucket each, fetched whole
        specs = loader.sampler.whole_batches()
        n_batches = len(specs)

        def fetch(batches: list[int]) -> Iterator[tuple[Any, list[int]]]:
            return ((loader.dataset[specs[b]], [p for _, _, p in specs[b]]) for b in batches)
    else:
        dataset, size = loader.dataset, loader.batch_size
        n_batches = -(-len(dataset) // size)

        def fetch(batches: list[int]) -> Iterator[tuple[Any, list[int]]]:
            ids = [list(range(b * size, min((b + 1) * size, len(dataset)))) for b in batches]
            subset = Subset(dataset, [i for clip_ids in ids for i in clip_ids])
            own = DataLoader(subset, size, num_workers=loader.num_workers, collate_fn=loader.collate_fn)
            return zip(own, ids, strict=True)

    replicas, rank = process_share(trainer.strategy)  # data-parallel: a sequence group shares its clips
    block = process_block(n_batches, rank, replicas)
    own = [b for b in block if b < n_batches]
    first = None
    for batch, clip_ids in fetch(own):
        first = (batch, clip_ids) if first is None else first
        yield batch, clip_ids, True
    if first is None:  # fewer batches than processes
        first = next(fetch([0]))
    for _ in range(len(block) - len(own)):
        yield *first, False


class ScalingRecorder(Callback):
    """Evaluates the low-variance validation loss at log-spaced steps and writes the run's record.

    ``metrics.csv`` gets one row per evaluation point (step, samples/tokens/FLOPs seen, train loss
    since the previous point, validation loss raw and EMA, wall time, throughput) and
    ``result.json`` the final row with parameters, costs, settings and environment. Both are
    rewritten atomically at each point, and the rows are saved in checkpoints so a resumed run
    continues the same table.

    Under DDP / FSDP the validation batches are dealt to the processes (:func:`validation_batches`),
    their loss sums are added up and the train loss is averaged
    over processes and only global rank 0 writes. The train losses summed since the last point are
    saved in checkpoints too (summed over processes), so the first row after a resume averages the
    same steps as an uninterrupted run's.

    Args:
        eval_points: number of log-spaced evaluation steps (the final step is always evaluated).
        out_dir: where to write; defaults to the trainer's ``default_root_dir``.
    """

    def __init__(self, eval_points: int = 10, out_dir: str | None = None) -> None:
        self.eval_points = eval_points
        self.out_dir = out_dir
        self.rows: list[dict[str, Any]] = []
        self.train_time = 0.0
        self._loss_sum = 0.0
        self._loss_count = 0
        self._restored_loss = (0.0, 0)  # global (sum, count) of train losses pending in a checkpoint
        self._tic = 0.0
        self._steps: set[int] = set()

    def directory(self, trainer: L.Trainer) -> Path:
        return Path(self.out_dir or trainer.default_root_dir)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.max_steps or trainer.max_steps < 0:
            raise ValueError(
                "ScalingRecorder needs trainer.max_steps (scaling runs are defined by their step budget)"
            )
        self._steps = set(log_spaced_steps(trainer.max_steps, self.eval_points))
        # The restored global sums join the next point's reduction once, through global rank 0.
        self._loss_sum, self._loss_count = self._restored_loss if trainer.is_global_zero else (0.0, 0)
        self._tic = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Lightning divides outputs["loss"] by accumulate_grad_batches; the per-sample losses are not.
        if not isinstance(outputs, dict) or "sample_losses" not in outputs:
            raise TypeError(
                f"ScalingRecorder needs training_step to return a dict with the per-sample losses under "
                f"'sample_losses' (as DiffusionModule does); {type(pl_module).__name__} returned "
                f"{type(outputs).__name__}"
            )
        losses = outputs["sample_losses"]
        self._loss_sum += float(losses.double().sum())
        self._loss_count += losses.numel()
        step = trainer.global_step
        if step in self._steps and (not self.rows or self.rows[-1]["step"] < step):
            self.train_time += time.perf_counter() - self._tic
            self.evaluate(trainer, pl_module)
            self._tic = time.perf_counter()

    @torch.no_grad()
    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        was_training = pl_module.training
        pl_module.eval()
        totals: dict[str, float] = {}
        count = 0
        precision = trainer.precision_plugin
        for batch, clip_ids, counted in validation_batches(trainer):
            batch = precision.convert_input(pl_module.transfer_batch_to_device(batch, pl_module.device, 0))
            with precision.val_step_context():
                losses = pl_module.validation_losses(batch, clip_ids)
            for name, loss in losses.items():  # a padding batch adds 0: every process has every name
                totals[name] = totals.get(name, 0.0) + (float(loss.float().sum()) if counted else 0.0)
            count += len(clip_ids) if counted else 0
        names = list(totals)  # the same order on every process: validation_losses fixes it
        local = torch.tensor([*(totals[n] for n in names), count], dtype=torch.float64).to(pl_module.device)
        *sums, count = trainer.strategy.reduce(local, reduce_op="sum").tolist()
        pl_module.train(was_training)
        # Mean train loss over the samples of every step since the last point, on all processes.
        loss_sum, loss_count = self.pending_loss(trainer, pl_module)
        row = {
            "step": trainer.global_step,
            **pl_module.accounting(),
            "train_loss": loss_sum / max(loss_count, 1),
            **{f"val_loss_{name}": total / count for name, total in zip(names, sums, strict=True)},
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "wall_time_s": self.train_time,
            "samples_per_s": pl_module.seen.samples_seen / self.train_time
            if self.train_time > 0
            else math.nan,
        }
        self._loss_sum, self._loss_count = 0.0, 0
        self.rows.append(row)
        if trainer.is_global_zero:
            self.write(trainer, pl_module)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        out = self.directory(trainer)
        buffer = io.StringIO()
        present = {key for row in self.rows for key in row}
        unknown = sorted(present - set(schema.names(schema.METRICS)))
        if unknown:
            raise ValueError(
                f"metrics.csv columns {unknown} are not in lit_vdit.schema.METRICS: add them there "
                f"with their unit and meaning"
            )
        fields = [name for name in schema.names(schema.METRICS) if name in present]
        writer = csv.DictWriter(buffer, fieldnames=fields)
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(out / "metrics.csv", buffer.getvalue())
        strategy, data = trainer.strategy, trainer.datamodule
        buckets = data.buckets if isinstance(data, VideoDataModule) else None
        result = {
            "finished": trainer.global_step >= trainer.max_steps,
            "started_from": pl_module.seen.started_from,
            "final": self.rows[-1],
            "costs": pl_module.costs,
            "hparams": dict(pl_module.hparams),
            "denoiser": type(pl_module.denoiser).__name__,
            "conditioning": pl_module.denoiser.conditioning,
            "mup_base_width": mup_base_width(pl_module.denoiser),
            "text_encoder": encoder_name(pl_module.encoder),
            "objective": type(pl_module.objective).__name__,
            "timestep_shift": timestep_shift(pl_module.objective, pl_module.latent_shape),
            "strategy": type(strategy).__name__,
            "precision": str(trainer.precision),
            "world_size": trainer.world_size,
            "peak_lr": pl_module.hparams.lr,
            "global_batch": data.global_batch(process_share(strategy)[0], trainer.accumulate_grad_batches)
            if isinstance(data, VideoDataModule)
            else None,
            "batch_size_per_device": data.batch_size if isinstance(data, VideoDataModule) else None,
            "train_clips": data.train_size if isinstance(data, VideoDataModule) else None,
            "bucket_mix": bucket_mix(buckets) if buckets else "",
            **environment(),
        }
        atomic_write_json(out / "result.json", result)

    def pending_loss(self, trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[float, int]:
        """Sum and count of the per-sample train losses since the last point, over all processes
        (collective)."""
        loss_sum, loss_count = trainer.strategy.reduce(
            torch.tensor([self._loss_sum, self._loss_count], dtype=torch.float64, device=pl_module.device),
            reduce_op="sum",
        ).tolist()
        return loss_sum, int(loss_count)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "train_time": self.train_time}

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # Every process saves a checkpoint together, so the reduction is safe here.
        checkpoint["callbacks"][self.state_key]["pending_loss"] = self.pending_loss(trainer, pl_module)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
        self.train_time = float(state_dict.get("train_time", 0.0))
        loss_sum, loss_count = state_dict.get("pending_loss", (0.0, 0))
        self._restored_loss = (float(loss_sum), int(loss_count))


def clips_in_batch(batch: dict[str, Any]) -> int:
    """A batch's clips on this process: of training or validation (a pack: its list of clips), or of
    generation (their indices)."""
    return len(batch[next(key for key in ("latent", "video", "index") if key in batch)])


class ThroughputMonitor(callbacks.ThroughputMonitor):
    """Lightning's throughput monitor over the runs' batches: samples/s, batches/s, FLOP/s and MFU, per
    device (``train/device/...``) and over all devices, averaged over ``window_size`` batches.

    The FLOPs are the accounting's (:attr:`DiffusionModule.flops_per_batch`: the denoiser's measured
    training FLOPs of each batch at its clip shape, VAE encoding included), so MFU agrees with the run's
    compute C. Under sequence parallelism a group's processes share their clips, so each counts its share.

    Args:
        window_size: batches in the rolling average (nothing is logged before that many).
        available_tflops: one device's peak for MFU: a number in TFLOP/s (H100 / H200 SXM bf16 dense:
            989), "measured" (a dense matmul in the run's compute dtype timed at setup: MFU against what
            this device delivers), or None: Lightning's table, which knows CUDA devices only (and gives
            sparse figures for some).
    """

    def __init__(self, window_size: int = 20, available_tflops: float | str | None = None) -> None:
        if isinstance(available_tflops, str) and available_tflops != "measured":
            raise ValueError(
                f"ThroughputMonitor(available_tflops={available_tflops!r}): give a number (TFLOP/s of one "
                "device), 'measured' (time a dense matmul at setup) or null (Lightning's datasheet table)"
            )
        self.share = 1.0  # of a batch's clips this process computes: 1 / the sequence degree
        super().__init__(batch_size_fn=self.clips, window_size=window_size)
        self.available_tflops = available_tflops

    def clips(self, batch: dict[str, Any]) -> float:
        return clips_in_batch(batch) * self.share

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.share = process_share(trainer.strategy)[0] / trainer.world_size
        super().setup(trainer, pl_module, stage)
        if self.available_tflops is None:
            return
        if self.available_tflops == "measured":
            device = trainer.strategy.root_device
            size = 8192 if device.type == "cuda" else 1024
            dtype = _plugin_to_compute_dtype(trainer.precision_plugin)  # the dtype the parent's setup uses
            self.available_flops = matmul_flops_per_second(size, seconds=1.0, dtype=dtype, device=device)
        else:
            self.available_flops = float(self.available_tflops) * 1e12
        # Lightning's setup built each stage's Throughput with its table's figure.
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops


def saves_folders(strategy: Any) -> bool:
    """Whether the strategy writes sharded checkpoint folders (FSDP2 distributed, FSDP sharded)."""
    if isinstance(strategy, ModelParallelStrategy):
        return bool(strategy._save_distributed_checkpoint)
    return isinstance(strategy, FSDPStrategy) and strategy._state_dict_type == "sharded"


class ModelCheckpoint(callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint with two guarantees for ``last``, the checkpoint runs resume from.

    - It is also saved when training ends between two periodic saves (``max_steps`` not a multiple of
      ``every_n_train_steps``), so it always holds the final weights that predict, eval and a finished
      grid run use; Lightning's own ``on_train_end`` saves it only if nothing was saved before.
    - Sharded checkpoints (folders) are replaced atomically. Lightning writes such a folder in place,
      shard by shard, so a crash mid-save would leave old and new shards mixed under ``last.ckpt``.
      Here each save goes to a fresh ``last.ckpt-step<N>`` folder and ``last.ckpt`` is a symlink
      swapped to it with one rename once every process has written; then the old folder goes.
      (Single-file checkpoints are atomic already: :class:`~lit_vdit.checkpoint_io.AtomicCheckpointIO`.)

    Lightning's skip rule and save helpers are reused through its private methods.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # Under manual optimization (the VAE's GAN updates) Lightning warns at every periodic save that
        # the weights saved are those after the step's update. That is the state a resume needs: the
        # checkpoint of step N holds the weights after N updates, with global_step N.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
            super().on_train_batch_end(trainer, pl_module, *args)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        is_last = Path(filepath).name.startswith(self.CHECKPOINT_NAME_LAST)
        if not (is_last and saves_folders(trainer.strategy)):
            super()._save_checkpoint(trainer, filepath)
            return
        link, version = Path(filepath), Path(f"{filepath}-step{trainer.global_step}")
        if trainer.is_global_zero:
            shutil.rmtree(version, ignore_errors=True)  # a partial save of this step from a crash
        trainer.strategy.barrier()
        super()._save_checkpoint(trainer, str(version))
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            previous = link.resolve() if link.is_symlink() else None
            if link.is_dir() and not link.is_symlink():  # a folder written in place before
                shutil.rmtree(link)
            staged = link.with_name(f".{link.name}.swap")
            staged.unlink(missing_ok=True)
            staged.symlink_to(version.name)
            os.replace(staged, link)
            if previous is not None and previous != version.resolve():
                shutil.rmtree(previous, ignore_errors=True)
        trainer.strategy.barrier()
        self._last_checkpoint_saved = filepath


class BranchCheckpoints(Callback):
    """Saves the full training state at given optimizer steps as ``checkpoints/branch-step=<N>.ckpt``:
    the points where cooldown branches resume from a constant-rate trunk (:mod:`experiments.cooldown`).

    Each is written under a temporary name and renamed once every process has written (a file, or a
    folder under sharded strategies), so a branch never starts from a partial save; a step already
    saved (before a kill and resume) is not saved again.
    """

    def __init__(self, steps: list[int]) -> None:
        self.steps = sorted(int(s) for s in steps)

    @staticmethod
    def path(directory: str | Path, step: int) -> Path:
        return Path(directory) / "checkpoints" / f"branch-step={step}.ckpt"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        final = self.path(trainer.default_root_dir, step)
        if step not in self.steps or final.exists():
            return
        staged = final.with_name(f".{final.name}.part")
        if trainer.is_global_zero and staged.is_dir():  # a partial sharded save from a crash
            shutil.rmtree(staged)
        trainer.strategy.barrier()
        trainer.save_checkpoint(staged, weights_only=False)  # the full training state
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            os.replace(staged, final)
        trainer.strategy.barrier()


class VideoWriter(BasePredictionWriter):
    """Writes each generated video of ``predict`` as ``sample_<index>_class<label>.<format>``, or from
    prompts as ``sample_<index>_<prompt in words>.<format>``.

    ``out_dir`` defaults to ``<default_root_dir>/samples``.
    """

    def __init__(self, out_dir: str | None = None, video_format: str = "mp4", fps: int = 8) -> None:
        super().__init__(write_interval="batch")
        if video_format not in ("mp4", "gif"):
            raise ValueError(f"video_format must be 'mp4' or 'gif', got {video_format!r}")
        self.out_dir, self.video_format, self.fps = out_dir, video_format, fps

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        captions = prediction.get("caption") or [None] * len(prediction["index"])
        for video, label, index, caption in zip(
            prediction["video"], prediction["label"], prediction["index"], captions, strict=True
        ):
            # From prompts: the prompt in the name ("a red circle moving left" -> a_red_circle_moving_left).
            what = (
                f"class{int(label)}" if caption is None else re.sub(r"[^a-z0-9]+", "_", caption.lower())[:60]
            )
            name = f"sample_{int(index):05d}_{what.strip('_')}.{self.video_format}"
            write_video(
                Path(self.out_dir or Path(trainer.default_root_dir) / "samples") / name, video, self.fps
            )
