"""Real videos sampled as fixed-size clips, and their DataModules (video folders, frame folders).

A :class:`ClipDataset` turns the videos of an index (:mod:`lit_vdit.data.layouts`) into clips of
``frames`` frames every ``frame_interval`` frames, resized (short side) and centre-cropped to
``height`` x ``width``, as ``{"video": (3, T, H, W) in [-1, 1], "label": int}``, plus ``"caption"``
when the DataModule has captions (:mod:`lit_vdit.data.captions`).
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from lit_vdit.data.buckets import Bucket, largest
from lit_vdit.data.captions import CaptionError, assign_captions, read_manifest, readable_class
from lit_vdit.data.datamodule import VideoDataModule
from lit_vdit.data.layouts import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FrameFolders,
    Layout,
    VideoDecodeError,
    VideoFiles,
    load_index,
)
from lit_vdit.io import fingerprint

log = logging.getLogger(__name__)

MAX_SUBSTITUTES = 10


# -- clips -------------------------------------------------------------------------------------------
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


def fitting_buckets(clip: Clip, buckets: list[Bucket], frame_interval: int) -> list[int]:
    """The buckets a clip may take: those its video is long enough for, of the aspect ratio nearest
    its native one (resize-and-crop then keeps most of the frame)."""
    long_enough = [i for i, b in enumerate(buckets) if clip_span(b.frames, frame_interval) <= clip.frames]
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


# -- DataModules -------------------------------------------------------------------------------------
def read_split_files(split_dir: str | Path, split: int = 1) -> tuple[list[str], list[str], list[str]]:
    """UCF-101 split files: (class names in label order, train videos, test videos) of ``split``."""
    folder = Path(split_dir)
    files = [folder / "classInd.txt", folder / f"trainlist0{split}.txt", folder / f"testlist0{split}.txt"]
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(
                f"split file {file} not found (UCF-101 layout: classInd.txt, trainlistNN.txt)"
            )
    lines = [[line.split() for line in file.read_text().splitlines() if line.strip()] for file in files]
    classes = [name for _, name in sorted((int(i), name) for i, name in lines[0])]
    return classes, [str(Path(row[0])) for row in lines[1]], [str(Path(row[0])) for row in lines[2]]


class VideoFolderDataModule(VideoDataModule):
    """Clips from a folder of videos: UCF-101 (``<Class>/v_<Class>_gXX_cYY.avi``), Kinetics-style
    class folders, or any tree of mp4/avi/webm/mov files.

    Validation clips come from the official split files (``split_dir``), else from ``val_root``,
    else from videos held out of ``root`` (a fixed set, whatever ``num_clips``). Clip selection
    does not depend on ``seed``, so runs with different seeds see the same data.

    Args:
        root: dataset folder, scanned recursively.
        frames, frame_interval: clip length and stride in video frames.
        height, width: training resolution (short side resized, then centre crop).
        clips_per_video: clips taken per video (at evenly spaced starts).
        num_clips: unique training clips (the data budget); None for all. Budgets are nested:
            the first n clips are a subset of the first n + 1.
        val_clips: fixed validation clips (always at the middle of their segment).
        val_root: separate validation folder (e.g. SkyTimelapse's ``sky_test``).
        split_dir, split: folder of UCF-101 split files (classInd.txt, trainlist0N.txt, testlist0N.txt).
        class_folders: label = top-level folder under ``root``; False: unconditional (0 classes).
        random_start: training clips start anywhere in their segment (validation never does).
        strict: raise on any unreadable or too short video, or uncaptioned one, instead of skipping it.
        captions: caption manifest, a CSV with ``path,text`` columns (Open-Sora's layout) or JSON
            lines of ``{"path", "text"}``, paths relative to ``root`` (``val_root``'s too); videos
            without a caption are skipped (an error when ``strict``).
        buckets: clip shapes of a run (:class:`~lit_vdit.data.datamodule.VideoDataModule`): each clip
            takes one of the buckets its video is long enough for and whose aspect ratio is nearest
            its own (then resized and centre-cropped to it); ``frames``, ``height``, ``width`` are
            then the largest bucket's.
        caption_template: captions from the class names instead, e.g. ``"a video of a person doing
            {label}"`` (``{label}``: the class folder name in words, "ApplyEyeMakeup" -> "apply eye makeup").
        extensions: file suffixes (or, for frame folders, image suffixes) to take.
        index_dir: where the scan index is kept (default ``~/.cache/lit_vdit/index``).
    """

    layout_class: type[VideoFiles | FrameFolders] = VideoFiles

    def __init__(
        self,
        root: str,
        frames: int = 16,
        frame_interval: int = 1,
        height: int = 64,
        width: int = 64,
        clips_per_video: int = 1,
        num_clips: int | None = None,
        val_clips: int = 64,
        val_root: str | None = None,
        split_dir: str | None = None,
        split: int = 1,
        class_folders: bool = True,
        random_start: bool = True,
        strict: bool = False,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        index_dir: str | None = None,
        captions: str | None = None,
        caption_template: str | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        num_predict: int = 8,
        seed: int = 0,
        prompts: list[str] | str | None = None,
        caption_cache: str | None = None,
        buckets: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(
            batch_size, val_batch_size, num_workers, num_predict, seed, prompts, caption_cache, buckets
        )
        if self.buckets is not None:  # the model is built for the largest bucket; FVD compares at it
            frames, height, width = largest(self.buckets).shape
        if num_clips is not None and num_clips < 1:
            raise ValueError(f"num_clips must be a positive number of unique clips or None, got {num_clips}")
        self.root, self.val_root, self.split_dir, self.split = root, val_root, split_dir, split
        self.frames, self.frame_interval, self.height, self.width = frames, frame_interval, height, width
        self.clips_per_video, self.num_clips, self.val_clips = clips_per_video, num_clips, val_clips
        self.class_folders, self.random_start, self.strict = class_folders, random_start, strict
        self.layout: Layout = self.layout_class(tuple(extensions))
        self.index_dir = index_dir
        if captions and caption_template:
            raise ValueError("give captions (a manifest) or caption_template, not both")
        if caption_template and "{label}" not in caption_template:
            raise ValueError(
                f"caption_template must contain {{label}} (the class name), got {caption_template!r}"
            )
        self.captions, self.caption_template = captions, caption_template
        self._clips: tuple[list[Clip], list[Clip], list[str]] | None = None

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return (3, self.frames, self.height, self.width)

    @property
    def num_classes(self) -> int:
        return len(self.clips()[2])

    @property
    def train_size(self) -> int:
        return len(self.clips()[0])

    def prepare_data(self) -> None:
        self.clips()  # probe new videos once, on one process, before every process's setup

    def clips(self) -> tuple[list[Clip], list[Clip], list[str]]:
        """(training clips, validation clips, class names), from the index (built on first use)."""
        if self._clips is None:
            self._clips = self._make_clips()
        return self._clips

    def _make_clips(self) -> tuple[list[Clip], list[Clip], list[str]]:
        index = lambda root: load_index(root, self.layout, self.index_dir, self.strict)
        videos = index(self.root)
        classes: list[str] | None = None
        if self.split_dir:
            classes, train_names, val_names = read_split_files(self.split_dir, self.split)
            missing = [n for n in train_names + val_names if n not in videos]
            if missing:
                log.warning(
                    "%d videos of the split files are missing or unreadable, e.g. %s",
                    len(missing),
                    missing[0],
                )
            train = {n: videos[n] for n in train_names if n in videos}
            val = {n: videos[n] for n in val_names if n in videos}
        elif self.val_root:
            train, val = videos, index(self.val_root)
        else:
            train, val = self._hold_out(videos)
        if self.class_folders:
            classes = classes or sorted({self._class_of(rel) for rel in [*train, *val]})
            labels = {rel: classes.index(self._class_of(rel)) for rel in [*train, *val]}
        else:
            classes, labels = [], dict.fromkeys([*train, *val], 0)
        captions = self._captions(train, val, classes, labels)
        if captions is not None:
            train = {rel: v for rel, v in train.items() if rel in captions}
            val = {rel: v for rel, v in val.items() if rel in captions}
        # With buckets, clips of the shortest bucket: a video serves every bucket it is long enough for.
        frames = min(b.frames for b in self.buckets) if self.buckets is not None else self.frames
        clips = lambda vids: make_clips(
            vids, labels, frames, self.frame_interval, self.clips_per_video, self.strict, captions
        )
        train_clips, val_clips = clips(train), clips(val)
        if not train_clips or not val_clips:
            raise ValueError(
                f"{self.root}: {len(train_clips)} training and {len(val_clips)} validation clips of "
                f"{clip_span(self.frames, self.frame_interval)} frames; add videos or shorten the clips"
            )
        return train_clips[: self.num_clips], val_clips[: self.val_clips], classes

    def _captions(
        self, train: dict[str, Any], val: dict[str, Any], classes: list[str], labels: dict[str, int]
    ) -> dict[str, str] | None:
        """Caption of every captioned video (train and val keys as in the index), or None without
        captions. With a separate ``val_root`` both splits are read from one manifest (paths under
        ``root`` and ``val_root`` both relative to ``root``)."""
        if self.caption_template:
            if not classes:
                raise CaptionError(
                    "caption_template names the class ({label}) but the data has no classes: use class "
                    "folders (class_folders: true) or UCF-101 split files, or a caption manifest"
                )
            return {
                rel: self.caption_template.format(label=readable_class(classes[labels[rel]]))
                for rel in [*train, *val]
            }
        if not self.captions:
            return None
        manifest = read_manifest(self.captions, self.root)
        keys = {rel: rel for rel in train}
        if self.val_root:  # val videos are named relative to root in the manifest
            keys.update(
                {
                    rel: os.path.relpath(Path(self.val_root, rel).resolve(), Path(self.root).resolve())
                    for rel in val
                }
            )
        else:
            keys.update({rel: rel for rel in val})
        found = assign_captions(sorted(set(keys.values())), manifest, self.captions, self.strict)
        return {rel: found[key] for rel, key in keys.items() if key in found}

    def split_captions(self, split: str) -> list[str] | None:
        train, val, _ = self.clips()
        if not (self.captions or self.caption_template):
            return None
        return [c.caption for c in (val if split == "val" else train)]

    def identity(self, split: str) -> dict[str, Any]:
        train, val, _ = self.clips()
        root = self.val_root if split == "val" and self.val_root else self.root
        chosen = val if split == "val" else train
        clips = [[c.video, c.frames, c.segment, c.segments, c.label] for c in chosen]
        if self.captions or self.caption_template:  # the text is part of what a clip is
            clips = [[*entry, c.caption] for entry, c in zip(clips, chosen, strict=True)]
        return {
            "source": type(self).__name__,
            "split": split,
            "root": str(Path(root).resolve()),
            "split_files": [str(Path(self.split_dir).resolve()), self.split] if self.split_dir else None,
            "clips": fingerprint(clips),  # videos, their frame counts (the index) and segments
        }

    def _class_of(self, rel: str) -> str:
        parts = Path(rel).parts
        if len(parts) < 2:
            raise ValueError(f"{rel} is not inside a class folder of {self.root}; set class_folders: false")
        return parts[0]

    def _hold_out(self, videos: dict[str, dict[str, Any]]) -> tuple[dict, dict]:
        """Validation videos held out of ``videos`` in a fixed hash order, until ``val_clips`` clips
        or half of the videos."""
        span, held, count = clip_span(self.frames, self.frame_interval), set(), 0
        for rel in sorted(videos, key=lambda r: (zlib.crc32(r.encode()), r)):
            if count >= self.val_clips or len(held) >= len(videos) // 2:
                break
            held.add(rel)
            count += min(self.clips_per_video, max(0, videos[rel]["frames"] - span + 1))
        if count < self.val_clips:
            log.warning(
                "%s: %d validation clips held out (half of the videos), not %d",
                self.root,
                count,
                self.val_clips,
            )
        return {r: v for r, v in videos.items() if r not in held}, {r: videos[r] for r in held}

    def dataset(
        self, clips: list[Clip], root: str, random_start: bool, shape: tuple[int, int, int] | None = None
    ) -> ClipDataset:
        frames, height, width = shape or (self.frames, self.height, self.width)
        return ClipDataset(
            root, self.layout, clips, frames, self.frame_interval, height, width, random_start, self.strict
        )

    def shaped(self, split: str, frames: int, height: int, width: int) -> Dataset:
        train, val, _ = self.clips()
        if split == "train":
            return self.dataset(train, self.root, self.random_start, (frames, height, width))
        return self.dataset(val, self.val_root or self.root, False, (frames, height, width))

    def bucket_fits(self, split: str) -> Callable[[int], list[int]]:
        train, val, _ = self.clips()
        clips = train if split == "train" else val
        return lambda i: fitting_buckets(clips[i], self.buckets, self.frame_interval)

    def setup(self, stage: str | None = None) -> None:
        train, val, _ = self.clips()
        self.train_set = self.dataset(train, self.root, self.random_start)
        if self.buckets is not None:  # the real clips of FVD / FID: those long enough for the largest
            val = [c for c in val if clip_span(self.frames, self.frame_interval) <= c.frames]
        self.val_set = self.dataset(val, self.val_root or self.root, False)


class FrameFolderDataModule(VideoFolderDataModule):
    """Clips from folders of numbered frames (SkyTimelapse, StyleGAN-V datasets): every folder that
    holds images is one video. Same arguments as :class:`VideoFolderDataModule`; unconditional
    unless ``class_folders``."""

    layout_class = FrameFolders

    def __init__(
        self,
        root: str,
        class_folders: bool = False,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, class_folders=class_folders, extensions=extensions, **kwargs)
