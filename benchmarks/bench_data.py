"""Data throughput: clips/s decoding videos with 0, 1, 2 workers, and training steps/s from a latent
cache versus decoding and VAE-encoding on the fly, as a ratio, in one run.

    OMP_NUM_THREADS=1 python benchmarks/bench_data.py [--root VIDEOS] [--frames 16] [--size 64]
        [--batch 8] [--steps 12] [--train-workers 0]

Without ``--root`` it writes a UCF-101-like folder of h264 videos (4 classes, 320x240, 25 fps,
96 frames, a keyframe every 12 frames) to a temporary folder. The VAE is the demo VAE
(configs/model/vae_demo.yaml: 1x4x4, 4 latent channels) with random weights: its encode cost is
that of a trained one. The denoiser is a ladder DiT; a step is timed from one batch end to the
next, so it includes waiting for data.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import lightning as L
import torch

from lit_vdit.data import LatentDataModule, SyntheticVideoDataset, VideoFolderDataModule
from lit_vdit.data.latents import build_cache
from lit_vdit.io import sha256_file
from lit_vdit.models.dit import VideoDiT
from lit_vdit.models.vae import CausalVideoVAE, load_frozen_vae
from lit_vdit.modules import DiffusionModule
from lit_vdit.video_io import to_uint8_frames


def write_videos(root: Path, count: int, frames: int = 96) -> None:
    """Moving-shapes videos at 320x240 as h264 mp4 in 4 class folders."""
    source = SyntheticVideoDataset(count, frames, 240, 320, num_classes=4)
    for i in range(count):
        item = source[i]
        path = root / f"class{item['label']}" / f"v{i:03d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            stream.codec_context.gop_size = 12
            for frame in to_uint8_frames(item["video"]):
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())


def decode_rate(data: VideoFolderDataModule, batches: int) -> float:
    """Clips/s of the training loader, after its first batch (worker start-up excluded)."""
    data.setup("fit")
    loader = iter(data.train_dataloader())
    next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * data.batch_size / (time.perf_counter() - start)


class StepTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args) -> None:
        self.times.append(time.perf_counter())


def step_time(data: L.LightningDataModule, vae: torch.nn.Module, steps: int) -> float:
    """Median seconds per training step (data wait included), the first 2 steps excluded."""
    torch.manual_seed(0)
    model = DiffusionModule(
        lambda shape, classes: VideoDiT(shape, classes, "T3", patch_size=(2, 2, 2)), vae=vae
    )
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps + 2, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer], limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    return statistics.median(b - a for a, b in zip(timer.times[1:], timer.times[2:], strict=False))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", help="a video folder (class folders); default: write synthetic videos")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6, help="batches timed per decoding setting")
    parser.add_argument("--steps", type=int, default=12, help="training steps timed per setting")
    parser.add_argument("--train-workers", type=int, default=0)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, PyAV {av.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = Path(args.root) if args.root else tmp / "videos"
        if not args.root:
            write_videos(root, args.videos)

        def videos(workers: int, random_start: bool = True) -> VideoFolderDataModule:
            return VideoFolderDataModule(
                str(root), frames=args.frames, height=args.size, width=args.size, clips_per_video=4,
                val_clips=args.batch, random_start=random_start, batch_size=args.batch, num_workers=workers,
                index_dir=str(tmp / "index"),
            )  # fmt: skip

        start = time.perf_counter()
        print(f"index: {videos(0).train_size} training clips, {time.perf_counter() - start:.2f}s to scan")
        for workers in (0, 1, 2):
            rate = decode_rate(videos(workers), args.batches)
            print(
                f"decode {args.frames}x{args.size}x{args.size} clips, {workers} workers: {rate:6.1f} clips/s"
            )

        vae = CausalVideoVAE(
            latent_channels=4, spatial_compression=4, temporal_compression=1, base_channels=16,
            channel_mult=[1, 2, 2], num_res_blocks=1,
        )  # fmt: skip
        vae.scale_factor.fill_(0.5)  # as if computed from data (load_frozen_vae warns on 1.0)
        ckpt = tmp / "vae.ckpt"
        state = {f"vae.{k}": v for k, v in vae.state_dict().items()}
        torch.save({"vae_config": vae.config, "state_dict": state}, ckpt)
        vae = load_frozen_vae(ckpt)
        data = videos(args.train_workers, random_start=False)
        start = time.perf_counter()
        build_cache(data, vae, sha256_file(ckpt), tmp / "latents", {}, batch_size=args.batch)
        print(f"cache-latents: {data.train_size + args.batch} clips in {time.perf_counter() - start:.1f}s")
        latents = LatentDataModule(
            str(tmp / "latents"), batch_size=args.batch, num_workers=args.train_workers
        )
        on_the_fly = step_time(videos(args.train_workers), vae, args.steps)
        cached = step_time(latents, vae, args.steps)
        print(f"train step (batch {args.batch}, DiT T3, {args.train_workers} loader workers):")
        print(f"  decode + VAE encode on the fly: {on_the_fly * 1e3:7.1f} ms/step")
        print(f"  from the latent cache:          {cached * 1e3:7.1f} ms/step")
        print(f"  speed-up from the cache:        {on_the_fly / cached:7.2f}x")


if __name__ == "__main__":
    main()
