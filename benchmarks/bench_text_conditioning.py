"""Cost of text conditioning: a training step of each mechanism relative to no text, at two lengths.

The demo's T3 DiT (full attention, sin-cos positions) on rectified flow, batch 8, with captions of
16 tokens (the demo's word encoder, width 32, frozen here: its own cost is reported apart), at 256 and
1,024 video tokens per clip (latents 4x4x16x16 and 4x4x32x32, patch 1x2x2).
Prints measured FLOPs and median step time of "none", "pooled", "cross" and "joint", and their ratios
to "none" measured in the same run.

    python benchmarks/bench_text_conditioning.py [--steps 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import functools
import statistics

import torch

from lit_vdit.diffusion import RectifiedFlow
from lit_vdit.flops import denoiser_costs
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.text import SmallTextEncoder, encode_captions
from lit_vdit.throughput import training_step_times

LENGTHS = {256: (4, 4, 16, 16), 1024: (4, 4, 32, 32)}  # video tokens -> latent (C, T, H, W), patch 1x2x2
MECHANISMS = ("none", "pooled", "cross", "joint")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    objective = RectifiedFlow()
    encoder = SmallTextEncoder(dim=32, depth=1, max_length=16).requires_grad_(False)
    captions = [f"a red circle moving left, fast, with {i % 3} other shapes" for i in range(args.batch_size)]
    text = encode_captions(encoder, captions, torch.device("cpu"))
    print(f"T3 DiT, batch {args.batch_size}, {encoder.max_length} caption tokens, {args.steps} timed steps")
    header = ("video tokens", "mechanism", "GFLOPs/sample", "step s", "x FLOPs", "x time")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (12, 9, 14, 8, 8, 7), strict=True)))
    for tokens, shape in LENGTHS.items():
        base = None
        for mechanism in MECHANISMS:
            text_dim = None if mechanism == "none" else encoder.dim
            build = functools.partial(
                VideoDiT, shape, 0, "T3", patch_size=(1, 2, 2), text_dim=text_dim,
                text_conditioning="cross" if mechanism == "none" else mechanism,
            )  # fmt: skip
            text_shape = None if text_dim is None else (encoder.max_length, encoder.dim)
            flops = denoiser_costs(build, objective, shape, 0, text_shape)["flops_train_step"]
            torch.manual_seed(0)
            model = build()
            x0 = torch.randn(args.batch_size, *shape)
            times = training_step_times(
                model, objective, x0, None, args.steps, warmup=10, text=None if text_dim is None else text
            )
            step = statistics.median(times)
            base = base or (flops, step)
            print(
                f"{tokens:>12} {mechanism:>9} {flops / 1e9:>14.3f} {step:>8.4f} "
                f"{flops / base[0]:>8.3f} {step / base[1]:>7.3f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
