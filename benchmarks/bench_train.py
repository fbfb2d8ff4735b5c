"""Training-step throughput of DiT presets on this machine, as a fraction of its matmul FLOP/s.

    python benchmarks/bench_train.py [--presets T4 T6 T7 T8] [--clip 3 8 32 32] [--batch 16] [--compile]

For each preset: samples/s of a full training step (forward, backward, AdamW) and the achieved
FLOP/s (measured FLOPs per step / step time), printed beside the same process's dense fp32 matmul
FLOP/s, so the ratio is an MFU on this CPU. Run it by hand on an idle machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from lit_vdit.diffusion import RectifiedFlow, denoiser_fn
from lit_vdit.flops import denoiser_costs, matmul_flops_per_second
from lit_vdit.models.dit import VideoDiT


def time_steps(
    model: torch.nn.Module, batch: int, shape: tuple[int, ...], steps: int, warmup: int = 3
) -> float:
    objective = RectifiedFlow()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, *shape), torch.randint(0, 16, (batch,))

    def step() -> None:
        t = objective.sample_timesteps(batch, x.device)
        objective.loss(denoiser_fn(model, y), x, torch.randn_like(x), t).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["T4", "T6", "T7", "T8"])
    parser.add_argument("--clip", nargs=4, type=int, default=[3, 8, 32, 32], metavar=("C", "T", "H", "W"))
    parser.add_argument("--patch", nargs=3, type=int, default=[1, 4, 4])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    args = parser.parse_args()
    shape = tuple(args.clip)
    matmul = matmul_flops_per_second(size=2048, seconds=2.0)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads; matmul fp32: {matmul / 1e9:.1f} GFLOP/s")
    header = ("preset", "params", "GFLOP/sample", "compiled", "samples/s", "GFLOP/s", "/matmul")
    print("".join(f"{h:>13s}" for h in header))
    modes = [False, True] if args.compile else [False]
    for preset in args.presets:

        def build(preset: str = preset) -> VideoDiT:
            return VideoDiT(shape, 16, preset, patch_size=tuple(args.patch))

        costs = denoiser_costs(build, RectifiedFlow(), shape, 16)
        for compiled in modes:
            model = build()
            model = torch.compile(model) if compiled else model
            seconds = time_steps(model, args.batch, shape, args.steps)
            achieved = costs["flops_train_step"] * args.batch / seconds
            cells = (
                preset,
                f"{costs['params_total']:,d}",
                f"{costs['flops_train_step'] / 1e9:.3f}",
                str(compiled),
                f"{args.batch / seconds:.1f}",
                f"{achieved / 1e9:.1f}",
                f"{achieved / matmul:.1%}",
            )
            print("".join(f"{c:>13s}" for c in cells))


if __name__ == "__main__":
    main()
