"""Training-step throughput of DiT presets, as a fraction of the same device's matmul FLOP/s (MFU).

    python benchmarks/bench_train.py [--presets T4 T6 T7 T8] [--clip 3 8 32 32] [--batch 16] [--compile]
    python benchmarks/bench_train.py --device cuda --precision bf16 --presets B/2 XL/2 \\
        --clip 4 16 32 32 --patch 1 2 2 --batch 8 --peak-tflops 989

For each preset: samples/s of a full training step (forward, backward, AdamW) and the achieved
FLOP/s (model FLOPs per step, counted on the meta device, / step time), printed beside the same
process's dense matmul FLOP/s in the same dtype, so the ratio is an MFU against what this device
really delivers; ``--peak-tflops`` adds the ratio to a datasheet peak (H100 SXM bf16 dense: 989).
``--precision bf16`` runs the step under bf16 autocast (fp32 weights and AdamW, as bf16-mixed).
Run it by hand on an idle machine.
"""

from __future__ import annotations

import argparse

import torch

from lit_vdit.diffusion import RectifiedFlow
from lit_vdit.flops import denoiser_costs, matmul_flops_per_second
from lit_vdit.models.dit import VideoDiT
from lit_vdit.throughput import training_step_times


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["T4", "T6", "T7", "T8"])
    parser.add_argument("--clip", nargs=4, type=int, default=[3, 8, 32, 32], metavar=("C", "T", "H", "W"))
    parser.add_argument("--patch", nargs=3, type=int, default=[1, 4, 4])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--peak-tflops", type=float, default=None, help="datasheet peak for a second ratio")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    args = parser.parse_args()
    shape = tuple(args.clip)
    device = torch.device(args.device)
    autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    matmul_dtype = autocast_dtype or torch.float32
    matmul = matmul_flops_per_second(
        size=4096 if device.type == "cuda" else 2048, seconds=2.0, dtype=matmul_dtype, device=device
    )
    where = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    )
    print(f"torch {torch.__version__}, {where}; matmul {args.precision}: {matmul / 1e12:.3f} TFLOP/s")
    header = ("preset", "params", "GFLOP/sample", "compiled", "samples/s", "TFLOP/s", "/matmul", "/peak")
    print("".join(f"{h:>13s}" for h in header))
    modes = [False, True] if args.compile else [False]
    for preset in args.presets:

        def build(preset: str = preset) -> VideoDiT:
            return VideoDiT(shape, 16, preset, patch_size=tuple(args.patch))

        costs = denoiser_costs(build, RectifiedFlow(), shape, 16)
        for compiled in modes:
            model = build().to(device)
            model = torch.compile(model) if compiled else model
            x = torch.randn(args.batch, *shape, device=device)
            y = torch.randint(0, 16, (args.batch,), device=device)
            times = training_step_times(model, RectifiedFlow(), x, y, args.steps, autocast_dtype, warmup=3)
            seconds = sum(times) / len(times)
            achieved = costs["flops_train_step"] * args.batch / seconds
            peak = f"{achieved / (args.peak_tflops * 1e12):.1%}" if args.peak_tflops else "-"
            cells = (
                preset,
                f"{costs['params_total']:,d}",
                f"{costs['flops_train_step'] / 1e9:.3f}",
                str(compiled),
                f"{args.batch / seconds:.1f}",
                f"{achieved / 1e12:.3f}",
                f"{achieved / matmul:.1%}",
                peak,
            )
            print("".join(f"{c:>13s}" for c in cells), flush=True)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
