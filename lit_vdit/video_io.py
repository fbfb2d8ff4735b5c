"""Writing generated videos: mp4 (H.264 through PyAV) or animated GIF (Pillow), written atomically."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from lit_vdit.io import atomic_write_bytes


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(C, T, H, W) in [-1, 1] -> (T, H, W, 3) uint8 (grey videos are repeated to RGB)."""
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 3, 0).cpu().numpy()
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames[..., :3]


def encode_mp4(frames: np.ndarray, fps: int) -> bytes:
    """H.264 mp4 (yuv420p, so height and width are padded to even sizes)."""
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


def encode_gif(frames: np.ndarray, fps: int) -> bytes:
    buffer = io.BytesIO()
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(
        buffer, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
    )
    return buffer.getvalue()


def write_video(path: str | Path, video: torch.Tensor, fps: int = 8) -> Path:
    """Write a (C, T, H, W) clip in [-1, 1] to ``path``; the suffix (.mp4 or .gif) picks the format."""
    path = Path(path)
    encoders = {".mp4": encode_mp4, ".gif": encode_gif}
    if path.suffix not in encoders:
        raise ValueError(f"cannot write video {path}: use a .mp4 or .gif file name")
    atomic_write_bytes(path, encoders[path.suffix](to_uint8_frames(video), fps))
    return path
