"""LightningDataModule conventions shared by every video source.

Batches are ``{"video": (B, C, T, H, W) in [-1, 1], "label": (B,)}``, with ``"caption"`` (B strings)
when the source has captions. Each DataModule exposes
``clip_shape`` (C, T, H, W), ``num_classes`` and ``train_size`` (unique training clips: the data
budget), which the DiffusionModule reads when it builds its model, and for sample-quality metrics
``real_videos(split)`` (the real clips generated videos are compared with) and ``identity(split)``
(what distinguishes those clips from another dataset's, part of every metric's protocol).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ParallelStrategy, Strategy
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.stateful_dataloader import _SAMPLER_ITER_YIELDED

from lit_vdit.data.buckets import BucketedDataset, BucketSampler, largest, parse_buckets
from lit_vdit.data.caption_cache import CaptionCache, CaptionedDataset
from lit_vdit.data.synthetic import MAX_CLASSES, UNBOUNDED_CLIPS, SyntheticVideoDataset
from lit_vdit.models.text import TextEncoder

# torchdata's StatefulDataLoader calls torch.set_vital, deprecated in torch 2.14, whenever a loader is
# made (by us or by Lightning when it re-creates one): a notice about torchdata's code, not the run.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated", module=r"torchdata\.")


class GenerationDataset(Dataset):
    """What ``predict`` generates: one item per video with its class label and noise seed, and with
    ``prompts`` one video per prompt (its ``caption``)."""

    def __init__(
        self, num_videos: int, num_classes: int, seed: int = 0, prompts: list[str] | None = None
    ) -> None:
        self.num_videos = len(prompts) if prompts else num_videos
        self.num_classes, self.seed, self.prompts = num_classes, seed, prompts

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, index: int) -> dict[str, int | str]:
        label = index % self.num_classes if self.num_classes else 0
        item = {"label": label, "seed": self.seed * 1_000_003 + index, "index": index}
        return {**item, "caption": self.prompts[index]} if self.prompts else item


def read_prompts(prompts: list[str] | str | None) -> list[str] | None:
    """Prompts given as a list, or as a text file of one prompt per line (blank lines skipped)."""
    if prompts is None or isinstance(prompts, list | tuple):
        return list(prompts) if prompts else None
    file = Path(prompts)
    if not file.is_file():
        raise FileNotFoundError(f"prompt file {file} does not exist (give a list of prompts or a text file)")
    lines = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"prompt file {file} holds no prompts (one per line)")
    return lines


class _EpochResumingLoader(StatefulDataLoader):
    """A StatefulDataLoader whose state also holds its shuffling sampler's epoch.

    torchdata restores how far into an epoch the loader was and skips that far into the sampler's
    order, but the order is that of the sampler's epoch when Lightning makes the resumed iterator,
    before it sets the epoch: a run resumed in the middle of epoch e >= 1 read the rest of epoch 0's
    order, and one resumed from a checkpoint of an epoch's last step skipped the next epoch.
    """

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if isinstance(self.sampler, DistributedSampler):
            state["sampler_epoch"] = self.sampler.epoch
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        epoch = state_dict.pop("sampler_epoch", None)
        if epoch is not None and isinstance(self.sampler, DistributedSampler):
            if state_dict.get(_SAMPLER_ITER_YIELDED, 0) >= len(self):
                self.sampler.set_epoch(epoch + 1)  # saved after the epoch's last batch: the next one
                return
            self.sampler.set_epoch(epoch)
        super().load_state_dict(state_dict)


class VideoDataModule(L.LightningDataModule):
    """Shared loaders; subclasses set ``self.train_set`` and ``self.val_set`` in ``setup``.

    Args:
        batch_size: per-process training batch size.
        val_batch_size: validation batch size (defaults to ``batch_size``).
        num_workers: DataLoader worker processes.
        num_predict: number of videos ``predict`` generates (of a class-conditional model: the classes
            in turn).
        seed: seed for shuffling (and for procedural data).
        prompts: what ``predict`` generates from with a text-conditional model, one video per prompt:
            a list, or a text file of one prompt per line.
        caption_cache: a folder written by ``lit-vdit cache-captions``: batches then carry each
            caption's frozen-encoder embedding (``text_tokens``, ``text_mask``), encoded once.
        buckets: clip shapes of a run, ``[{frames, height, width, probability, batch_size}, ...]``
            (:mod:`lit_vdit.data.buckets`): each batch is of one of them (batches then carry each
            clip's ``position`` in the run and its ``bucket``); ``clip_shape`` is the largest, which
            the model is built for. None: every clip of the source's one shape.
        pack_positions: with buckets, training batches are packs (NaViT) instead: clips of any
            buckets, each process's pack up to this many positions (T*H*W), its ``video`` a list of
            clips that the denoiser runs as one sequence (:meth:`VideoDiT.forward_packed`).
    """

    def __init__(
        self,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        num_predict: int = 8,
        seed: int = 0,
        prompts: list[str] | str | None = None,
        caption_cache: str | None = None,
        buckets: list[dict[str, Any]] | None = None,
        pack_positions: int | None = None,
    ) -> None:
        super().__init__()
        self.buckets = parse_buckets(buckets, batch_size) if buckets is not None else None
        if pack_positions is not None and self.buckets is None:
            raise ValueError("pack_positions packs clips of several buckets: give the data buckets")
        self.pack_positions = pack_positions
        self.prompts = read_prompts(prompts)
        self.caption_cache = CaptionCache(caption_cache) if caption_cache else None
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.num_predict = num_predict
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    frame_interval: int = 1  # video frames between two clip frames (video folders set theirs)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    @property
    def train_size(self) -> int:
        raise NotImplementedError

    def identity(self, split: str) -> dict[str, Any]:
        """What identifies the real clips of ``split`` ("train" or "val") beyond their shape: the source
        and its content (root, split files, a fingerprint of the clip list). Hashed into each metric's
        protocol and into the real-feature cache key, so two datasets never share either."""
        raise NotImplementedError

    def check_vae(self, vae: nn.Module) -> None:
        """Refuse a model whose VAE cannot train on these batches (a latent cache made by another)."""

    def check_text_encoder(self, encoder: TextEncoder | None) -> None:
        """Refuse a model whose text encoder did not make the caption cache these batches carry."""
        if self.caption_cache is not None:
            self.caption_cache.check(encoder)

    def split_set(self, split: str) -> Dataset:
        """The dataset of ``split`` ("train" or "val"), set up on first use."""
        if self.train_set is None or self.val_set is None:
            self.setup("validate")
        return self.val_set if split == "val" else self.train_set

    def real_videos(self, split: str) -> Dataset:
        """The real clips of ``split`` as ``{"video": (3, T, H, W) in [-1, 1], ...}`` items, in a fixed
        order: what FVD / FID compare generated videos with."""
        return self.split_set(split)

    def split_captions(self, split: str) -> list[str] | None:
        """The captions of ``split``'s clips in their order (None when the source has none): what
        ``cache-captions`` encodes and a latent cache keeps beside its latents."""
        dataset = self.split_set(split)
        if len(dataset) >= UNBOUNDED_CLIPS:
            raise ValueError("an unbounded stream of clips has no caption list: set the data's num_clips")
        if "caption" not in dataset[0]:
            return None
        return [dataset[i]["caption"] for i in range(len(dataset))]

    def global_batch(self, world_size: int, accumulate: int = 1) -> int:
        """Clips per optimizer step over ``world_size`` processes and ``accumulate`` micro-batches."""
        return self.batch_size * world_size * accumulate

    def clip_size(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The (frames, height, width) of ``clip_shape``: the largest bucket's with buckets (the model
        is built for it; FVD compares at it), else those given."""
        return largest(self.buckets).shape if self.buckets is not None else (frames, height, width)

    def shaped(self, split: str, frames: int, height: int, width: int) -> Dataset:
        """The clips of ``split`` at a bucket's shape (the same clips, index for index, at every shape)."""
        raise NotImplementedError(f"{type(self).__name__} does not emit buckets: drop its buckets")

    def bucket_fits(self, split: str) -> Callable[[int], list[int]] | None:
        """Which buckets clip i of ``split`` may take; None: all (procedural clips have no native shape)."""
        return None

    def image_pool(self, split: str) -> tuple[int, float] | None:
        """(first image index, fraction of the clips) when ``split``'s clips end with images drawn
        apart (image + video joint training); None: one pool."""
        return None

    def _bucket_loader(self, split: str, shuffle: bool) -> DataLoader:
        """Whole batches of one bucket each (:class:`~lit_vdit.data.buckets.BucketSampler`)."""
        datasets = [self.shaped(split, *b.shape) for b in self.buckets]
        if len(datasets[0]) >= UNBOUNDED_CLIPS:
            raise ValueError("buckets deal a finite set of clips in epochs: set the data's num_clips")
        if self.caption_cache is not None:
            datasets = [CaptionedDataset(d, self.caption_cache) for d in datasets]
        buckets = self.buckets
        if not shuffle:  # validation batches: val_batch_size clips of one bucket
            buckets = [replace(b, batch_size=self.val_batch_size) for b in buckets]
        replicas, rank = process_share(self.trainer.strategy if self.trainer is not None else None)
        fits, pool = self.bucket_fits(split), self.image_pool(split)
        sampler = BucketSampler(
            datasets[0], buckets, replicas, rank, self.seed, shuffle, fits, pool, self.pack_positions
        )
        return _EpochResumingLoader(
            BucketedDataset(datasets, packs=shuffle and self.pack_positions is not None),
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, captioned: bool = True) -> DataLoader:
        """A StatefulDataLoader: checkpoints store the data position and a resumed run continues it;
        with a caption cache (and ``captioned``) its items carry their captions' embeddings."""
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        sampler = None
        if shuffle and len(dataset) >= UNBOUNDED_CLIPS:
            # An unbounded stream: draw indices with replacement; an "epoch" is 1000 batches.
            sampler = RandomSampler(
                dataset, replacement=True, num_samples=1000 * batch_size, generator=generator
            )
        elif shuffle:
            sampler = self._shuffled(dataset)
        if self.caption_cache is not None and captioned:
            dataset = CaptionedDataset(dataset, self.caption_cache)
        return _EpochResumingLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=generator if sampler is None else None,
        )

    def _shuffled(self, dataset: Dataset) -> DistributedSampler:
        """One shuffled order for any number of processes: epoch e is ``randperm(seed + e)`` dealt
        round-robin to the processes (the Trainer calls ``set_epoch``), so a single-process run reads
        the same global batches as a multi-process one, and a resumed run the same as an uninterrupted one."""
        replicas, rank = process_share(self.trainer.strategy if self.trainer is not None else None)
        return DistributedSampler(
            dataset, num_replicas=replicas, rank=rank, shuffle=True, seed=self.seed, drop_last=True
        )

    def train_dataloader(self) -> DataLoader:
        if self.buckets is not None:
            return self._bucket_loader("train", shuffle=True)
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if self.buckets is not None:
            return self._bucket_loader("val", shuffle=False)
        return self._loader(self.val_set, self.val_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        generation = GenerationDataset(self.num_predict, self.num_classes, self.seed, self.prompts)
        return self._loader(generation, self.val_batch_size, False, captioned=False)


class SyntheticDataModule(VideoDataModule):
    """Moving-shapes videos (see :mod:`lit_vdit.data.synthetic`): train and val never overlap.

    Args:
        num_clips: unique training clips (the data budget); None for an unbounded stream.
        val_clips: fixed validation clips.
        frames, height, width: clip size.
        num_classes: classes (1..16).
    """

    def __init__(
        self,
        num_clips: int | None = 1024,
        val_clips: int = 64,
        frames: int = 8,
        height: int = 32,
        width: int = 32,
        num_classes: int = MAX_CLASSES,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        num_predict: int = 8,
        seed: int = 0,
        prompts: list[str] | str | None = None,
        caption_cache: str | None = None,
        buckets: list[dict[str, Any]] | None = None,
        pack_positions: int | None = None,
    ) -> None:
        super().__init__(
            batch_size,
            val_batch_size,
            num_workers,
            num_predict,
            seed,
            prompts,
            caption_cache,
            buckets,
            pack_positions,
        )
        self.num_clips, self.val_clips = num_clips, val_clips
        frames, height, width = self.clip_size(frames, height, width)
        self.frames, self.height, self.width = frames, height, width
        self._num_classes = num_classes

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (3, self.frames, self.height, self.width)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def train_size(self) -> int:
        return len(self._dataset("train", self.num_clips))

    def identity(self, split: str) -> dict[str, Any]:
        # Clip i of a split is fixed by (seed, split, i, shape, classes): the count is the protocol's.
        classes = self._num_classes
        return {"source": type(self).__name__, "split": split, "seed": self.seed, "num_classes": classes}

    def _dataset(
        self, split: str, num_clips: int | None, shape: tuple[int, int, int] | None = None
    ) -> Dataset:
        frames, height, width = shape or (self.frames, self.height, self.width)
        return SyntheticVideoDataset(
            num_clips, frames, height, width, self._num_classes, seed=self.seed, split=split
        )

    def shaped(self, split: str, frames: int, height: int, width: int) -> Dataset:
        # A synthetic clip is drawn in fractions of its size: clip i is the same scene at every shape.
        return self._dataset(
            split, self.num_clips if split == "train" else self.val_clips, (frames, height, width)
        )

    def setup(self, stage: str | None = None) -> None:
        self.train_set = self._dataset("train", self.num_clips)
        self.val_set = self._dataset("val", self.val_clips)


def process_share(strategy: Strategy | None) -> tuple[int, int]:
    """(replicas, rank) of the data-parallel split under a Lightning strategy: (1, 0) on one device."""
    if isinstance(strategy, ParallelStrategy):
        kwargs = strategy.distributed_sampler_kwargs
        return int(kwargs["num_replicas"]), int(kwargs["rank"])
    return 1, 0
