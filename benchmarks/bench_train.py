"""Training-step throughput of DiT presets, as a fraction of the same device's matmul FLOP/s (MFU).

    python benchmarks/bench_train.py [--presets T4 T6 T7 T8] [--clip 3 8 32 32] [--batch 16] [--compile]
    python benchmarks/bench_train.py --compile --clip 4 1 32 32 --patch 1 2 2 --reference ~/DiT
    python benchmarks/bench_train.py --device cuda --precision bf16 --presets B/2 XL/2 \\
        --clip 4 16 32 32 --patch 1 2 2 --batch 8 --peak-tflops 989

For each preset: samples/s of a full training step (forward, backward, AdamW) and the achieved
FLOP/s (model FLOPs per step, counted on the meta device, / step time), printed beside the same
process's dense matmul FLOP/s in the same dtype, so the ratio is an MFU against what this device
really delivers; ``--peak-tflops`` adds the ratio to a datasheet peak (H100 SXM bf16 dense: 989).
``--precision bf16`` runs the step under bf16 autocast (fp32 weights and AdamW, as bf16-mixed).
``--sdpa flash`` allows only the flash attention kernel. ``--compile`` also times the model with each
block compiled, as runs with ``compile: true`` are
(:func:`lit_vdit.parallel.parallelize`), and prints compiled / eager. ``--reference DIR`` (a clone of
facebookresearch/DiT, whose ``models.py`` needs ``pip install timm``) times its ``DiT`` at the same
size, patch and image (the clip's one frame: give ``--clip C 1 H W``), eager and with its blocks
compiled likewise, and prints ours / theirs. Run it by hand on an idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from lit_vdit.diffusion import RectifiedFlow
from lit_vdit.flops import denoiser_costs, matmul_flops_per_second
from lit_vdit.models.dit import VideoDiT, parse_preset
from lit_vdit.parallel import parallelize
from lit_vdit.throughput import training_step_times


def reference_dit(directory: str, preset: str, shape: tuple[int, ...], patch: int) -> torch.nn.Module:
    """facebookresearch/DiT's model (``models.DiT`` of a local clone) at the preset's size."""
    sys.path.insert(0, str(Path(directory).expanduser()))
    try:
        from models import DiT
    except ModuleNotFoundError as err:
        raise SystemExit(
            f"--reference {directory}: cannot import its models.py ({err}); pip install timm"
        ) from err
    (hidden, depth, heads), _ = parse_preset(preset)
    channels, frames, height, width = shape
    if frames != 1 or height != width:
        raise SystemExit(f"--reference: DiT is an image model: give --clip {channels} 1 H H, got {shape}")
    return DiT(input_size=height, patch_size=patch, in_channels=channels, hidden_size=hidden, depth=depth,
               num_heads=heads, num_classes=16, learn_sigma=False)  # fmt: skip


ATTENTION_KERNELS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}


def attention_kernel(name: str | None) -> contextlib.AbstractContextManager:
    """Only this scaled-dot-product attention kernel (a step it cannot run fails), or the dispatcher's."""
    return sdpa_kernel(ATTENTION_KERNELS[name]) if name else contextlib.nullcontext()


def compiled_blocks(model: torch.nn.Module) -> torch.nn.Module:
    """Each block compiled: ours through parallelize (the runs' path), the reference's alike."""
    if isinstance(model, VideoDiT):
        return parallelize(model, compile=True)
    for block in model.blocks:
        block.compile()
    return model


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
    parser.add_argument("--compile", action="store_true", help="also time the models with compiled blocks")
    parser.add_argument("--reference", metavar="DIR", help="a clone of facebookresearch/DiT to time beside")
    parser.add_argument("--sdpa", choices=list(ATTENTION_KERNELS), help="allow only this attention kernel")
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
    header = (
        "model",
        "params",
        "GFLOP/sample",
        "compiled",
        "samples/s",
        "TFLOP/s",
        "/matmul",
        "/peak",
        "ratio",
    )
    print("".join(f"{h:>13s}" for h in header))
    modes = [False, True] if args.compile else [False]
    for preset in args.presets:

        def build(preset: str = preset) -> VideoDiT:
            return VideoDiT(shape, 16, preset, patch_size=tuple(args.patch))

        costs = denoiser_costs(build, RectifiedFlow(), shape, 16)
        models = {"lit_vdit": build}
        if args.reference:
            models["DiT"] = lambda preset=preset: reference_dit(args.reference, preset, shape, args.patch[-1])
        x = torch.randn(args.batch, *shape, device=device)
        y = torch.randint(0, 16, (args.batch,), device=device)
        seconds = {}
        for name, make in models.items():
            for compiled in modes:
                model = make().to(device)
                model = compiled_blocks(model) if compiled else model
                batch = x if name == "lit_vdit" else x[:, :, 0]  # the reference takes images
                with attention_kernel(args.sdpa):
                    times = training_step_times(
                        model, RectifiedFlow(), batch, y, args.steps, autocast_dtype, warmup=3
                    )
                seconds[name, compiled] = sum(times) / len(times)
                achieved = costs["flops_train_step"] * args.batch / seconds[name, compiled]
                peak = f"{achieved / (args.peak_tflops * 1e12):.1%}" if args.peak_tflops else "-"
                if compiled:  # compiled / eager time
                    ratio = f"{seconds[name, True] / seconds[name, False]:.2f}"
                elif name != "lit_vdit":  # the reference's time / ours, eager
                    ratio = f"{seconds[name, False] / seconds['lit_vdit', False]:.2f}"
                else:
                    ratio = "-"
                gflops = f"{costs['flops_train_step'] / 1e9:.3f}"
                cells = (
                    f"{name} {preset}", f"{costs['params_total']:,d}", gflops, str(compiled),
                    f"{args.batch / seconds[name, compiled]:.1f}", f"{achieved / 1e12:.3f}",
                    f"{achieved / matmul:.1%}", peak, ratio,
                )  # fmt: skip
                print("".join(f"{c:>13s}" for c in cells), flush=True)
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        if args.reference and args.compile:
            ratio = seconds["DiT", True] / seconds["lit_vdit", True]
            print(f"{preset}: compiled step time, DiT / lit_vdit: {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
