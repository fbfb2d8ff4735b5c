"""Buckets: several clip shapes in one run, read in the same order on any number of processes."""

from functools import partial

import lightning as L
import pytest
import torch

from lit_vdit.data.buckets import Bucket, BucketSampler, bucket_mix, parse_buckets
from lit_vdit.data.datamodule import SyntheticDataModule
from lit_vdit.models.dit import VideoDiT
from lit_vdit.modules.accounting import Accounting
from lit_vdit.modules.diffusion_module import DiffusionModule

BUCKETS = [
    {"frames": 4, "height": 16, "width": 16, "probability": 2, "batch_size": 2},
    {"frames": 2, "height": 16, "width": 24, "batch_size": 4},
    {"frames": 1, "height": 16, "width": 16, "batch_size": 8},  # images
]


def batches(sampler: BucketSampler, epoch: int) -> list[list[tuple[int, int, int]]]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_two_processes_read_the_global_batches_of_one_in_the_same_shapes_and_positions():
    dataset = list(range(128))
    one = BucketSampler(
        dataset, parse_buckets([{**b, "batch_size": 2 * b["batch_size"]} for b in BUCKETS], 4)
    )
    two = [BucketSampler(dataset, parse_buckets(BUCKETS, 4), num_replicas=2, rank=r) for r in (0, 1)]
    for epoch in (0, 1):
        single = batches(one, epoch)
        ranks = [batches(s, epoch) for s in two]
        assert len(single) == len(ranks[0]) == len(ranks[1]) > 3
        for whole, a, b in zip(single, *ranks, strict=True):
            merged = sorted(a + b, key=lambda item: item[2])
            assert merged == sorted(whole, key=lambda item: item[2])  # same clips, buckets, positions
            assert {item[1] for item in whole} == {whole[0][1]}  # a global batch is one bucket
    first, second = batches(one, 0), batches(one, 1)
    assert second[0][0][2] == sum(len(batch) for batch in first)  # positions run on across epochs
    assert {b for batch in first for _, b, _ in batch} == {0, 1, 2}


def test_bucket_probabilities_set_each_bucket_share_of_the_clips():
    sampler = BucketSampler(list(range(6000)), parse_buckets([{**b, "batch_size": 1} for b in BUCKETS], 1))
    counts = torch.bincount(torch.tensor([b for batch in batches(sampler, 0) for _, b, _ in batch]))
    assert counts.tolist() == pytest.approx([3000, 1500, 1500], rel=0.06)
    assert bucket_mix(parse_buckets(BUCKETS, 4)) == "4x16x16:0.5,2x16x24:0.25,1x16x16:0.25"


def test_bad_buckets_are_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"unknown keys \['fps'\]"):
        parse_buckets([{"frames": 4, "height": 8, "width": 8, "fps": 8}], 4)
    with pytest.raises(ValueError, match=r"missing keys \['width'\]"):
        parse_buckets([{"frames": 4, "height": 8}], 4)
    with pytest.raises(ValueError, match="repeat a shape"):
        parse_buckets([{"frames": 4, "height": 8, "width": 8}] * 2, 4)
    assert parse_buckets([Bucket(1, 8, 8)], 4)[0].batch_size == 4


def test_a_run_on_buckets_trains_validates_and_counts_each_shape_at_its_own_cost(tmp_path):
    data = SyntheticDataModule(num_clips=48, val_clips=12, num_classes=4, batch_size=4, buckets=BUCKETS)
    assert data.clip_shape == (3, 4, 16, 16)  # the largest bucket: what the model is built for
    module = DiffusionModule(
        partial(VideoDiT, preset="T0", patch_size=(1, 4, 4), max_tokens=64), ema_decay=0.0, val_timesteps=2
    )
    seen: list[tuple[int, ...]] = []

    class Shapes(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(tuple(batch["video"].shape))

    trainer = L.Trainer(
        max_steps=8,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Shapes()],
        val_check_interval=4,
    )
    L.seed_everything(0)
    trainer.fit(module, datamodule=data)
    assert {shape[2:] for shape in seen} >= {(4, 16, 16), (2, 16, 24)}
    expected = sum(shape[0] * module.costs_at(shape[1:])["flops_train_step"] for shape in seen)
    assert module.seen.flops_measured == expected
    assert module.seen.tokens_seen == sum(shape[0] * shape[2] * shape[3] * shape[4] // 16 for shape in seen)
    assert module.costs_at((3, 1, 16, 16))["flops_train_step"] < module.costs["flops_train_step"] / 3
    assert torch.isfinite(trainer.callback_metrics["val/loss_raw"])


def test_a_run_remembers_the_checkpoint_it_first_resumed_from():
    """A cooldown branch's shared FLOPs are its trunk's at the branch point, measured, not step x a
    constant per-step cost (which buckets break); a later resume of the branch keeps them."""
    branch = Accounting()
    branch.load_state_dict({"samples_seen": 40, "flops_measured": 1234567}, {}, step=8)  # the trunk's
    assert branch.started_from == {"step": 8, "flops_measured": 1234567}
    resumed = Accounting()
    resumed.load_state_dict({**branch.state_dict(), "flops_measured": 3000000}, {}, step=12)
    assert resumed.started_from == {"step": 8, "flops_measured": 1234567}
