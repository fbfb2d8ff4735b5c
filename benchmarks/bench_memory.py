"""Peak training memory against tokens per clip: the estimate (lit_vdit.memory, from a meta-device
pass) beside a measurement, eager, with activation checkpointing and per process under sequence
parallelism (2 processes over gloo), and the largest clip that fits.

Each measured point is a fresh process (``--measure``): the DiT and AdamW are built, one step is
taken (Adam's moments allocated), then the peak resident memory is reset (Linux /proc/self/clear_refs)
and one more step taken; its peak above the memory resident before it is what the step needs on
top of the weights and optimizer states: activations and gradients. glibc is told to return every
allocation over 64 KiB to the system at once (MALLOC_MMAP_THRESHOLD_), so resident memory follows
the allocations. On a GPU the same script measures torch.cuda.max_memory_allocated.

    python benchmarks/bench_memory.py [--preset S/2] [--frames 1 2 4 8] [--size 32] [--memory-gib 80]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_vdit.diffusion import RectifiedFlow
from lit_vdit.flops import denoiser_costs
from lit_vdit.memory import GIB, measure_step_bytes, peak_training_bytes, step_bytes
from lit_vdit.models.dit import VideoDiT
from lit_vdit.parallel import parallelize

CHANNELS = 4


def build(preset: str, frames: int, size: int) -> VideoDiT:
    return VideoDiT((CHANNELS, frames, size, size), num_classes=16, preset=preset)


def estimate(
    preset: str, frames: int, size: int, batch: int, checkpointed: bool, sp: int = 1
) -> tuple[int, dict]:
    costs = denoiser_costs(
        lambda: build(preset, frames, size), RectifiedFlow(), (CHANNELS, frames, size, size), 16
    )
    peak = peak_training_bytes(
        costs, batch, ema=False, activation_checkpointing=checkpointed, sequence_parallel=sp
    )
    return peak, costs


def measure(preset: str, frames: int, size: int, batch: int, checkpointed: bool, sp: int = 1) -> int:
    """Bytes one training step needs above the resident weights and optimizer states (the most of any
    process: with ``sp`` > 1, that many processes over gloo split each clip's tokens)."""
    if sp == 1:
        return _measure(preset, frames, size, batch, checkpointed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = mp.Manager().dict()
    mp.spawn(_measure_rank, args=(sp, port, out, preset, frames, size, batch, checkpointed), nprocs=sp)
    return max(out.values())


def _measure_rank(rank: int, sp: int, port: int, out: dict, *args: Any) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=sp)
    out[rank] = _measure(*args, group=dist.group.WORLD)
    dist.destroy_process_group()


def _measure(preset: str, frames: int, size: int, batch: int, checkpointed: bool, group: Any = None) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = build(preset, frames, size).to(device)
    if group is not None:
        model.shard_sequence(group)
    model = parallelize(model, activation_checkpointing=checkpointed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    objective = RectifiedFlow()
    x = torch.randn(batch, CHANNELS, frames, size, size, device=device)
    y = torch.zeros(batch, dtype=torch.long, device=device)

    def step() -> None:
        t = objective.sample_timesteps(batch, device)
        objective.loss(lambda x_t, time: model(x_t, time, y), x, torch.randn_like(x), t).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return measure_step_bytes(step, device)


MAX_FRAMES = 4096


def largest_frames(preset: str, size: int, batch: int, checkpointed: bool, budget: float, sp: int) -> int:
    """The most frames (doubling, up to MAX_FRAMES) whose estimated peak fits ``budget`` bytes."""
    frames = 1
    while frames < MAX_FRAMES and estimate(preset, frames * 2, size, batch, checkpointed, sp)[0] <= budget:
        frames *= 2
    return frames if estimate(preset, frames, size, batch, checkpointed, sp)[0] <= budget else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="S/2")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--size", type=int, default=32, help="latent height and width")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--memory-gib", type=float, default=80.0, help="memory of the device to plan for")
    parser.add_argument("--sequence-parallel", type=int, default=2, help="degree of the SP estimates")
    parser.add_argument("--measure", nargs=6, metavar=("PRESET", "FRAMES", "SIZE", "BATCH", "CKPT", "SP"))
    args = parser.parse_args(argv)
    if args.measure:  # one measured point, in its own process
        preset, frames, size, batch, ckpt, sp = args.measure
        print(json.dumps(measure(preset, int(frames), int(size), int(batch), ckpt == "1", int(sp))))
        return 0
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    shape = f"{CHANNELS}x{{frames}}x{args.size}x{args.size}"
    print(f"DiT {args.preset}, {shape} latents, batch {args.batch}, fp32; a step's memory above weights "
          "and AdamW states (MiB)")  # fmt: skip
    sp = args.sequence_parallel
    modes = ("eager", "ckpt", f"SP{sp}", f"SP{sp}+ckpt")
    print(" " * 20 + "".join(f"{m:>30}" for m in modes))
    heads = ("frames", "tokens", *(c for _ in modes for c in ("est", "measured", "meas/est")))
    print(" ".join(f"{h:>9}" for h in heads))
    for frames in args.frames:
        row = []
        costs = estimate(args.preset, frames, args.size, args.batch, False)[1]
        for degree, ckpt in ((1, False), (1, True), (sp, False), (sp, True)):
            step_estimate = step_bytes(
                costs, args.batch, activation_checkpointing=ckpt, sequence_parallel=degree
            )
            command = [sys.executable, __file__, "--measure", args.preset, str(frames), str(args.size),
                       str(args.batch), "1" if ckpt else "0", str(degree)]  # fmt: skip
            measured = json.loads(
                subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            )
            row += [step_estimate / 2**20, measured / 2**20, measured / step_estimate]
        tokens = costs["tokens_per_sample"]
        print(" ".join([f"{frames:>9}", f"{tokens:>9}", *(f"{v:>9.2f}" if i % 3 == 2 else f"{v:>9.1f}"
                                                           for i, v in enumerate(row))]))  # fmt: skip
    budget = args.memory_gib * GIB
    for ckpt, degree in ((False, 1), (True, 1), (False, sp), (True, sp)):
        frames = largest_frames(args.preset, args.size, args.batch, ckpt, budget, degree)
        mode = ("activation checkpointing" if ckpt else "eager") + (
            f", sequence parallel {degree}" if degree > 1 else ""
        )
        at_least = "at least " if frames == MAX_FRAMES else ""
        print(f"largest clip within {args.memory_gib:g} GiB ({mode}): {at_least}{frames} frames of "
              f"{args.size}x{args.size} latents at batch {args.batch} (estimated peak, fp32)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
