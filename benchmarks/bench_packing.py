"""Packing against buckets: training tokens per second on a load of mixed clip shapes.

The same clips (``--clips`` of each of four shapes: 8x32x32, 4x32x32, 4x24x40, 1x32x32, a 1x4x4 patch:
512, 256, 240 and 64 tokens) go through forward + backward of a rectified-flow loss of the same DiT
(``--preset``, class-conditional) two ways, in one run:

- buckets (the baseline): batches of one shape, ``--clips`` clips each (as the BucketSampler makes);
- packing: NaViT-style sequences of up to ``--pack-tokens`` tokens filled first-fit-decreasing with
  clips of any shapes (``VideoDiT.forward_packed``: block-diagonal SDPA mask, no padding).

Prints tokens per second of each and their ratio (packed / buckets), median of ``--repeats``.

    python benchmarks/bench_packing.py [--preset T3] [--clips 8] [--pack-tokens 2048] [--repeats 5]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from lit_vdit.diffusion import RectifiedFlow
from lit_vdit.models.dit import VideoDiT

SHAPES = [(8, 32, 32), (4, 32, 32), (4, 24, 40), (1, 32, 32)]
PATCH = (1, 4, 4)


def tokens_of(shape: tuple[int, int, int]) -> int:
    return math.prod(s // p for s, p in zip(shape, PATCH, strict=True))


def packs(clips: list[torch.Tensor], capacity: int) -> list[list[int]]:
    """First-fit-decreasing: clip indices per sequence of at most ``capacity`` tokens."""
    order = sorted(range(len(clips)), key=lambda i: -tokens_of(tuple(clips[i].shape[1:])))
    bins: list[tuple[int, list[int]]] = []
    for i in order:
        n = tokens_of(tuple(clips[i].shape[1:]))
        for k, (used, members) in enumerate(bins):
            if used + n <= capacity:
                bins[k] = (used + n, [*members, i])
                break
        else:
            bins.append((n, [i]))
    return [members for _, members in bins]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="T3")
    parser.add_argument("--clips", type=int, default=8, help="clips of each shape (a bucket's batch)")
    parser.add_argument("--pack-tokens", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = VideoDiT((3, *SHAPES[0]), num_classes=16, preset=args.preset, patch_size=PATCH)
    flow = RectifiedFlow()
    clips = [torch.randn(3, *shape) for shape in SHAPES for _ in range(args.clips)]
    labels = torch.randint(16, (len(clips),))
    times = torch.rand(len(clips))
    noise = [torch.randn_like(c) for c in clips]
    total_tokens = sum(tokens_of(tuple(c.shape[1:])) for c in clips)

    def bucketed() -> None:
        for b in range(len(SHAPES)):
            idx = list(range(b * args.clips, (b + 1) * args.clips))
            x0, eps = torch.stack([clips[i] for i in idx]), torch.stack([noise[i] for i in idx])
            t, y = times[idx], labels[idx]
            loss = flow.loss(lambda x, s, y=y: model(x, s, y), x0, eps, t).sum()
            loss.backward()

    sequences = packs(clips, args.pack_tokens)

    def packed() -> None:
        for members in sequences:
            t = times[members]
            x_t = [
                flow.add_noise(clips[i][None], noise[i][None], t[k : k + 1])[0] for k, i in enumerate(members)
            ]
            out = model.forward_packed(x_t, flow.model_time(t), labels[members])
            loss = sum(((o - (noise[i] - clips[i])) ** 2).mean() for o, i in zip(out, members, strict=True))
            loss.backward()

    results = {}
    for name, step in (("buckets", bucketed), ("packing", packed)):
        step()  # warm-up
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            step()
            samples.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        results[name] = total_tokens / statistics.median(samples)
    print(
        f"{len(clips)} clips of {len(SHAPES)} shapes, {total_tokens:,} tokens; {args.preset}, "
        f"{len(sequences)} packs of <= {args.pack_tokens} tokens vs {len(SHAPES)} bucket batches"
    )
    for name, rate in results.items():
        print(f"  {name:8s} {rate:12,.0f} tokens/s")
    print(f"  packing / buckets: {results['packing'] / results['buckets']:.2f}")


if __name__ == "__main__":
    main()
