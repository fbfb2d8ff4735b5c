"""Buckets: clips of several (frames, height, width) shapes in one run, as Open-Sora's bucket config.

A bucket is a clip shape with a probability and a per-process batch size (e.g. smaller batches for
longer or larger clips, so a batch holds about the same tokens). Each epoch every clip is assigned one
bucket among those it fits (all of them for procedural data; for videos, those of the nearest aspect
ratio no longer than the video), with the buckets' probabilities; each bucket's clips form global
batches, and the global batches are read in a shuffled order. All of it is drawn from (seed, epoch)
alone, and every process takes its share of each global batch, so a run reads the same clips in the
same shapes on any number of processes and after any resume.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, DistributedSampler, default_collate


@dataclasses.dataclass(frozen=True)
class Bucket:
    """A clip shape, how often clips are drawn at it (relative to the other buckets they fit) and
    its per-process batch size (None: the DataModule's ``batch_size``)."""

    frames: int
    height: int
    width: int
    probability: float = 1.0
    batch_size: int | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.frames, self.height, self.width)

    @property
    def positions(self) -> int:
        return self.frames * self.height * self.width

    def label(self) -> str:
        return f"{self.frames}x{self.height}x{self.width}"


def parse_buckets(buckets: Sequence[dict[str, Any] | Bucket], batch_size: int) -> list[Bucket]:
    """Buckets from a config's list of ``{frames, height, width, probability, batch_size}``."""
    fields = {f.name for f in dataclasses.fields(Bucket)}
    parsed = []
    for i, bucket in enumerate(buckets):
        if isinstance(bucket, dict):
            unknown = sorted(set(bucket) - fields)
            missing = sorted({"frames", "height", "width"} - set(bucket))
            if unknown or missing:
                raise ValueError(
                    f"bucket {i} {bucket}: unknown keys {unknown} / missing keys {missing}; a bucket is "
                    f"{{frames, height, width, probability (default 1), batch_size (default the data's)}}"
                )
            bucket = Bucket(**bucket)
        if min(bucket.shape) < 1 or bucket.probability <= 0 or (bucket.batch_size or 1) < 1:
            raise ValueError(f"bucket {i} {bucket}: sizes and batch size must be >= 1, probability > 0")
        parsed.append(dataclasses.replace(bucket, batch_size=bucket.batch_size or batch_size))
    if not parsed:
        raise ValueError("buckets is an empty list: give at least one {frames, height, width}")
    if len({b.shape for b in parsed}) != len(parsed):
        raise ValueError(f"buckets repeat a shape: {[b.label() for b in parsed]}")
    return parsed


def largest(buckets: Sequence[Bucket]) -> Bucket:
    """The bucket of the most latent positions: the shape the model is built for (the others fit it)."""
    return max(buckets, key=lambda b: (b.positions, b.shape))


def bucket_mix(buckets: Sequence[Bucket]) -> str:
    """``"4x16x16:0.5,1x16x16:0.5"``: shapes and probabilities, as runs.csv records them."""
    total = sum(b.probability for b in buckets)
    return ",".join(f"{b.label()}:{b.probability / total:.3g}" for b in buckets)


@dataclasses.dataclass
class GlobalBatch:
    """The clips of one step on all processes with their buckets; ``shares``: each process's clips
    (positions in ``clips``) of a packed batch, None for a batch of one bucket (dealt round-robin)."""

    clips: list[int]
    buckets: list[int]
    shares: list[list[int]] | None = None


class BucketSampler(DistributedSampler):
    """Yields this process's batches as lists of ``(clip index, bucket, global position)``.

    A ``DistributedSampler`` (so Lightning does not put one around it) whose items are whole
    batches: the loader runs with ``batch_size=None`` and :class:`BucketedDataset` collates.
    ``fits(i)`` lists the buckets clip ``i`` may take (None: all of them). ``pool=(start, fraction)``:
    the clips from index ``start`` on (images, for image + video joint training) are a second pool,
    drawn, cycling through its shuffled order, to be ``fraction`` of each epoch's clips. With
    ``shuffle=False`` (validation) clip i takes the ``i``-th of its buckets in turn, batches follow
    clip order, a clip's position is its index (its fixed noise follows it), and a bucket's last
    global batch is padded with its first clips to a multiple of the processes (as
    ``DistributedSampler`` pads).
    """

    def __init__(
        self,
        dataset: Dataset,
        buckets: Sequence[Bucket],
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        fits: Callable[[int], list[int]] | None = None,
        pool: tuple[int, float] | None = None,
        pack_positions: int | None = None,
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=shuffle
        )
        if pool is not None and not (0 < pool[1] < 1 and 0 < pool[0] < len(dataset)):
            raise ValueError(f"pool {pool}: a start inside the dataset and a fraction in (0, 1)")
        too_large = [
            b.label() for b in buckets if pack_positions is not None and b.positions > pack_positions
        ]
        if too_large:
            raise ValueError(f"pack_positions={pack_positions} is below a clip of bucket {too_large[0]}")
        self.buckets, self.fits, self.pool = list(buckets), fits, pool
        self.pack_positions = pack_positions if shuffle else None  # validation: batches of one bucket
        self._plans: dict[int, list[GlobalBatch]] = {}

    def allowed(self, index: int) -> list[int]:
        return list(self.fits(index)) if self.fits is not None else list(range(len(self.buckets)))

    def plan(self, epoch: int) -> list[GlobalBatch]:
        """Epoch ``epoch``'s global batches, in reading order."""
        if not self.shuffle:
            epoch = 0  # validation: one fixed order
        if epoch in self._plans:
            return self._plans[epoch]
        members: list[list[int]] = [[] for _ in self.buckets]
        batches: list[GlobalBatch] = []
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + epoch)
            order = self.epoch_order(epoch, generator)
            draws = torch.rand(len(order), generator=generator, dtype=torch.float64).tolist()
            weights = torch.tensor([b.probability for b in self.buckets], dtype=torch.float64)
            for index, u in zip(order, draws, strict=True):
                allowed = self.allowed(index)
                if allowed:  # a clip that fits no bucket (too short) was counted when the data was set up
                    cumulative = torch.cumsum(weights[allowed], 0) / weights[allowed].sum()
                    pick = min(int(torch.searchsorted(cumulative, u)), len(allowed) - 1)
                    members[allowed[pick]].append(index)
            if self.pack_positions is not None:
                batches = self.packed(order, members)
            else:
                for b, clips in enumerate(members):
                    size = self.buckets[b].batch_size * self.num_replicas
                    batches += [
                        GlobalBatch(clips[i : i + size], [b] * size)
                        for i in range(0, len(clips) - size + 1, size)
                    ]
                batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        else:
            for index in range(len(self.dataset)):
                allowed = self.allowed(index)
                if allowed:
                    members[allowed[index % len(allowed)]].append(index)
            for b, clips in enumerate(members):
                size = self.buckets[b].batch_size * self.num_replicas
                for i in range(0, len(clips), size):
                    chunk = clips[i : i + size]
                    padding = -len(chunk) % self.num_replicas
                    padded = chunk + (clips * padding)[:padding]
                    batches.append(GlobalBatch(padded, [b] * len(padded)))
        self._plans[epoch] = batches
        return batches

    def packed(self, order: list[int], members: list[list[int]]) -> list[GlobalBatch]:
        """Packs of clips of any buckets, in the epoch's order, each up to ``pack_positions`` positions
        (next fit), one per process in each global batch."""
        bucket_of = {index: b for b, clips in enumerate(members) for index in clips}
        packs: list[list[int]] = [[]]
        used = 0
        for index in (i for i in order if i in bucket_of):
            positions = self.buckets[bucket_of[index]].positions
            if used + positions > self.pack_positions:
                packs.append([])
                used = 0
            packs[-1].append(index)
            used += positions
        batches = []
        for start in range(0, len(packs) - self.num_replicas + 1, self.num_replicas):
            group = packs[start : start + self.num_replicas]
            clips = [index for pack in group for index in pack]
            bounds = [0, *itertools.accumulate(len(pack) for pack in group)]
            shares = [list(range(a, b)) for a, b in itertools.pairwise(bounds)]
            batches.append(GlobalBatch(clips, [bucket_of[i] for i in clips], shares))
        return batches

    def epoch_order(self, epoch: int, generator: torch.Generator) -> list[int]:
        """The clips of epoch ``epoch`` in a shuffled order; with a second pool, its share of them
        taken in turn from the pool's own order (epoch e continues where epoch e - 1 stopped)."""
        if self.pool is None:
            return torch.randperm(len(self.dataset), generator=generator).tolist()
        start, fraction = self.pool
        pool_size = len(self.dataset) - start
        first = torch.randperm(start, generator=generator).tolist()
        take = round(fraction / (1 - fraction) * start)
        pool_generator = torch.Generator().manual_seed(self.seed - 1)  # one order for every epoch
        pool_order = torch.randperm(pool_size, generator=pool_generator).tolist()
        taken = [start + pool_order[(epoch * take + k) % pool_size] for k in range(take)]
        mixed = first + taken
        return [mixed[i] for i in torch.randperm(len(mixed), generator=generator).tolist()]

    def whole_batches(self) -> list[list[tuple[int, int, int]]]:
        """Every global batch of epoch 0 whole, unpadded: what one process reads (validation shares
        them out itself, :func:`lit_vdit.callbacks.validation_batches`)."""
        one = BucketSampler(
            self.dataset,
            self.buckets,
            1,
            0,
            self.seed,
            self.shuffle,
            self.fits,
            self.pool,
            self.pack_positions,
        )
        one.set_epoch(0)
        return list(one)

    def offset(self, epoch: int) -> int:
        """Samples read by all processes before epoch ``epoch`` (the first position of its first batch)."""
        return sum(len(batch.clips) for e in range(epoch) for batch in self.plan(e)) if self.shuffle else 0

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        position = self.offset(self.epoch)
        for batch in self.plan(self.epoch):
            clips, buckets = batch.clips, batch.buckets
            # Sample i * replicas + rank of a batch of one bucket; a process's own pack of a packed one.
            mine = (
                batch.shares[self.rank] if batch.shares else range(self.rank, len(clips), self.num_replicas)
            )
            yield [(clips[i], buckets[i], position + i if self.shuffle else clips[i]) for i in mine]
            position += len(clips)

    def __len__(self) -> int:
        return len(self.plan(self.epoch))


class BucketedDataset(Dataset):
    """Whole batches from one dataset per bucket (the same clips at each bucket's shape): item
    ``[(index, bucket, position), ...]`` -> a collated batch with ``position`` and ``bucket``; with
    ``packs``, its ``video`` a list of the clips."""

    def __init__(self, shaped: Sequence[Dataset], packs: bool = False) -> None:
        self.shaped, self.packs = list(shaped), packs

    def __len__(self) -> int:
        return len(self.shaped[0])

    def __getitem__(self, batch: list[tuple[int, int, int]]) -> dict[str, Any]:
        items = [{**self.shaped[b][i], "position": p, "bucket": b} for i, b, p in batch]
        if not self.packs:
            return default_collate(items)
        # A pack: clips of any shapes, kept as a list (the model packs them into one sequence); a list
        # even when they share one, so that every process takes the same path (and collectives).
        videos = [item.pop("video") for item in items]
        return {**default_collate(items), "video": videos}
