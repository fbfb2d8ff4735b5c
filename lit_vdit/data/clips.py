"""Real videos sampled as fixed-size clips: which frames a clip takes, its resize-and-crop, the clip
list of an index (nested data budgets) and the dataset that decodes them.

A :class:`ClipDataset` turns the videos of an index (:mod:`lit_vdit.data.layouts`) into clips of
``frames`` frames every ``frame_interval`` frames, resized (short side) and centre-cropped to
``height`` x ``width``, as ``{"video": (3, T, H, W) in [-1, 1], "label": int}``, plus ``"caption"``
when the clips have captions (:mod:`lit_vdit.data.captions`).
"""

from __future__ import annotations

import logging
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lit_vdit.data.buckets import Bucket
from lit_vdit.data.layouts import Layout, VideoDecodeError

log = logging.getLogger(__name__)

MAX_SUBSTITUTES = 10


def clip_span(frames: int, frame_interval: int) -> int:
    """Frames of video one clip covers."""
    return (frames - 1) * frame_interval + 1


def sample_clip(
    length: int, frames: int, frame_interval: int, segment: int = 0, segments: int = 1, random: bool = False
) -> list[int]:
    """Frame indices of clip ``segment`` of ``segments`` in a video of ``length`` frames.

    The valid start frames are split into ``segments`` equal ranges; the clip starts at the middle
    of its range, or anywhere in it when ``random`` (from torch's global generator, which the
    DataLoader seeds per worker).
    """
    span = clip_span(frames, frame_interval)
    starts = length - span + 1
    if starts < 1:
        raise ValueError(f"a video of {length} frames is shorter than a clip ({span} frames)")
    lo = segment * starts // segments
    hi = max((segment + 1) * starts // segments, lo + 1)
    start = int(torch.randint(lo, hi, ())) if random else (lo + hi - 1) // 2
    return list(range(start, start + span, frame_interval))


def resize_crop(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, height, width) in [-1, 1]: short side resized (antialiased),
    then centre crop."""
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)  # channels-last uint8: torch's fast resize path
    h, w = x.shape[-2:]
    scale = max(height / h, width / w)
    size = (max(height, round(h * scale)), max(width, round(w * scale)))
    if size != (h, w):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    x = x[..., top : top + height, left : left + width]
    return (x.float() / 127.5 - 1).permute(1, 0, 2, 3).contiguous()


@dataclass(frozen=True)
class Clip:
    video: str  # path relative to the root
    frames: int  # frames in the video
    fps: float | None
    label: int
    segment: int
    segments: int
    caption: str | None = None
    height: int = 0  # the video's native size (for buckets by aspect ratio)
    width: int = 0


def make_clips(
    videos: dict[str, dict[str, Any]],
    labels: dict[str, int],
    frames: int,
    frame_interval: int,
    clips_per_video: int,
    strict: bool = False,
    captions: dict[str, str] | None = None,
) -> list[Clip]:
    """Up to ``clips_per_video`` clips per video, in a fixed pseudo-random order (a hash of video and
    segment), so that the first n clips are a subset of the first n + 1: nested data budgets.
    Videos shorter than a clip are skipped with a warning (raise when ``strict``)."""
    span, clips, short = clip_span(frames, frame_interval), [], 0
    for rel, entry in videos.items():
        starts = entry["frames"] - span + 1
        if starts < 1:
            message = f"video {rel} is too short: {entry['frames']} frames, a clip needs {span}"
            if strict:
                raise VideoDecodeError(f"{message} (strict=True)")
            log.warning("skipping %s", message)
            short += 1
            continue
        segments = min(clips_per_video, starts)
        caption = captions[rel] if captions is not None else None
        clips += [
            Clip(rel, entry["frames"], entry["fps"], labels[rel], s, segments, caption, *native_size(entry))
            for s in range(segments)
        ]
    if short:
        log.warning(
            "%d of %d videos are shorter than a clip (%d frames) and skipped", short, len(videos), span
        )
    return sorted(clips, key=lambda c: (zlib.crc32(f"{c.video}#{c.segment}".encode()), c.video, c.segment))


def native_size(entry: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of an indexed video."""
    return int(entry["height"]), int(entry["width"])


def fitting_buckets(
    clip: Clip, buckets: list[Bucket], frame_interval: int, among: list[int] | None = None
) -> list[int]:
    """The buckets (of ``among``, default all) a clip may take: those its video is long enough for, of
    the aspect ratio nearest its native one (resize-and-crop then keeps most of the frame)."""
    among = range(len(buckets)) if among is None else among
    long_enough = [i for i in among if clip_span(buckets[i].frames, frame_interval) <= clip.frames]
    if not long_enough:
        return []
    distance = lambda i: abs(math.log((buckets[i].width / buckets[i].height) / (clip.width / clip.height)))
    nearest = min(distance(i) for i in long_enough)
    return [i for i in long_enough if distance(i) - nearest < 1e-9]


class ClipDataset(Dataset):
    """Clips of indexed videos as ``{"video": (3, T, H, W) in [-1, 1], "label": int}``.

    A clip that fails to decode (rare once indexed) is replaced by the next one, with a warning,
    so a long run never dies on one bad file; ``strict`` raises instead.
    """

    def __init__(
        self,
        root: str | Path,
        layout: Layout,
        clips: list[Clip],
        frames: int,
        frame_interval: int,
        height: int,
        width: int,
        random_start: bool = False,
        strict: bool = False,
    ) -> None:
        self.root, self.layout, self.clips = Path(root), layout, clips
        self.frames, self.frame_interval = frames, frame_interval
        self.height, self.width = height, width
        self.random_start, self.strict = random_start, strict

    def __len__(self) -> int:
        return len(self.clips)

    def load(self, index: int) -> dict[str, torch.Tensor | int]:
        clip = self.clips[index]
        indices = sample_clip(
            clip.frames, self.frames, self.frame_interval, clip.segment, clip.segments, self.random_start
        )
        frames = self.layout.read(self.root / clip.video, indices, clip.fps)
        item = {"video": resize_crop(frames, self.height, self.width), "label": clip.label}
        return item if clip.caption is None else {**item, "caption": clip.caption}

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        errors = []
        for offset in range(min(MAX_SUBSTITUTES, len(self))):
            substitute = (index + offset) % len(self)
            try:
                return self.load(substitute)
            except VideoDecodeError as e:
                if self.strict:
                    raise
                errors.append(str(e))
                log.warning("clip %d: %s; using clip %d instead", substitute, e, (substitute + 1) % len(self))
        raise VideoDecodeError(f"{len(errors)} clips in a row failed to decode, last: {errors[-1]}")
