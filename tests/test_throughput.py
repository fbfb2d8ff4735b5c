"""Throughput and MFU of a run (lit_vdit.callbacks.ThroughputMonitor over the accounting's FLOPs)."""

from functools import partial

import lightning as L
import pandas as pd
import pytest
from lightning.pytorch.loggers import CSVLogger

from lit_vdit.callbacks import ThroughputMonitor
from lit_vdit.data import SyntheticDataModule
from lit_vdit.models.dit import VideoDiT
from lit_vdit.modules import DiffusionModule


class BatchFlops(L.Callback):
    """``flops_per_batch`` after every training batch and during validation."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.validation: list[float | None] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train.append(pl_module.flops_per_batch)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.validation.append(pl_module.flops_per_batch)


def monitored_run(tmp_path, available_tflops, steps: int = 6):
    L.seed_everything(0)
    module = DiffusionModule(partial(VideoDiT, preset="T0", patch_size=(1, 4, 4)), val_timesteps=2)
    # Two clip shapes: a batch's FLOPs depend on its bucket.
    buckets = [{"frames": 4, "height": 16, "width": 16}, {"frames": 2, "height": 32, "width": 32}]
    data = SyntheticDataModule(
        num_clips=16, val_clips=4, frames=4, height=16, width=16, batch_size=4, buckets=buckets
    )
    flops = BatchFlops()
    monitor = ThroughputMonitor(window_size=2, available_tflops=available_tflops)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, callbacks=[flops, monitor], logger=CSVLogger(tmp_path, name="t"),
        log_every_n_steps=1, val_check_interval=3, check_val_every_n_epoch=None, limit_val_batches=1,
        num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, data)
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    return module, flops, monitor, metrics


def test_throughput_counts_the_accounting_flops_and_gives_mfu(tmp_path):
    module, flops, _, metrics = monitored_run(tmp_path, available_tflops=1e-3)
    # Every training batch's FLOPs, summed, are the run's compute: throughput and C agree.
    assert len(flops.train) == 6 and len(set(flops.train)) == 2  # the two buckets' costs
    accounting = module.accounting()
    assert sum(flops.train) == pytest.approx(accounting["flops_measured"] + accounting["flops_vae_encode"])
    assert flops.validation and all(f is None for f in flops.validation)  # no training FLOPs there
    logged = metrics.dropna(subset=["train/device/flops_per_sec"])
    assert len(logged) >= 3
    assert (logged["train/device/flops_per_sec"] > 0).all()
    # MFU against the given peak (1 GFLOP/s).
    mfu = logged["train/device/mfu"] / (logged["train/device/flops_per_sec"] / 1e9)
    assert mfu.to_numpy() == pytest.approx(1.0)
    assert (logged["train/device/samples_per_sec"] > 0).all()


def test_throughput_measures_the_peak_when_asked(tmp_path):
    _, _, monitor, metrics = monitored_run(tmp_path, available_tflops="measured", steps=3)
    assert monitor.available_flops > 1e8  # a dense float32 matmul on this CPU
    mfu = metrics["train/device/mfu"].dropna()
    assert len(mfu) and ((mfu > 0) & (mfu < 1)).all()


def test_throughput_refuses_an_unknown_peak():
    with pytest.raises(ValueError, match="'measured'"):
        ThroughputMonitor(available_tflops="datasheet")
