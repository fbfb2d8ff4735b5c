"""The DataModules of real videos (video folders, frame folders, UCF-101 split files), their clips
(:mod:`lit_vdit.data.clips`) in buckets and beside images."""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from lit_vdit.data.captions import CaptionError, assign_captions, read_manifest, readable_class
from lit_vdit.data.clips import Clip, ClipDataset, clip_span, fitting_buckets, make_clips
from lit_vdit.data.datamodule import VideoDataModule
from lit_vdit.data.layouts import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    FrameFolders,
    ImageFiles,
    Layout,
    VideoFiles,
    load_index,
)
from lit_vdit.io import fingerprint

log = logging.getLogger(__name__)


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
        images: a folder of images (any tree; class folders named as the videos' when they have
            classes) for image + video joint training: the images fill the one-frame buckets (and
            the videos the others), ``image_fraction`` of each epoch's clips.
        image_captions: the images' caption manifest (paths relative to ``images``), when the videos
            are captioned from a manifest (``caption_template`` captions both by class).
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
        images: str | None = None,
        image_fraction: float = 0.25,
        image_captions: str | None = None,
        pack_positions: int | None = None,
    ) -> None:
        super().__init__(
            batch_size,
            val_batch_size,
            num_workers,
            num_predict,
            seed,
            prompts,
            caption_cache,
            buckets,
            pack_positions,
        )
        if images is not None and not any(b.frames == 1 for b in self.buckets or []):
            raise ValueError(
                "images train in one-frame buckets: add a bucket {frames: 1, height, width} to buckets"
            )
        if not 0 < image_fraction < 1:
            raise ValueError(
                f"image_fraction is the images' share of the clips, in (0, 1): got {image_fraction}"
            )
        self.images, self.image_fraction, self.image_captions = images, image_fraction, image_captions
        self._image_clips: list[Clip] | None = None
        frames, height, width = self.clip_size(frames, height, width)
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

    def _class_captions(self, rels: list[str], classes: list[str], labels: dict[str, int]) -> dict[str, str]:
        """``caption_template`` filled with each video's (or image's) class name in words."""
        if not classes:
            raise CaptionError(
                "caption_template names the class ({label}) but the data has no classes: use class "
                "folders (class_folders: true) or UCF-101 split files, or a caption manifest"
            )
        return {rel: self.caption_template.format(label=readable_class(classes[labels[rel]])) for rel in rels}

    def _captions(
        self, train: dict[str, Any], val: dict[str, Any], classes: list[str], labels: dict[str, int]
    ) -> dict[str, str] | None:
        """Caption of every captioned video (train and val keys as in the index), or None without
        captions. With a separate ``val_root`` both splits are read from one manifest (paths under
        ``root`` and ``val_root`` both relative to ``root``)."""
        if self.caption_template:
            return self._class_captions([*train, *val], classes, labels)
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
        if split != "train":
            return self.dataset(val, self.val_root or self.root, False, (frames, height, width))
        videos = self.dataset(train, self.root, self.random_start, (frames, height, width))
        if self.images is None:
            return videos
        images = ClipDataset(
            self.images, ImageFiles(), self.image_clips(), 1, 1, height, width, False, self.strict
        )
        return ConcatDataset([videos, images])  # the images after the videos (image_pool)

    def bucket_fits(self, split: str) -> Callable[[int], list[int]]:
        train, val, _ = self.clips()
        videos = train if split == "train" else val
        clips = videos + (self.image_clips() if split == "train" and self.images is not None else [])
        # With images, they fill the one-frame buckets and the videos the others (else any bucket).
        moving = [i for i, b in enumerate(self.buckets) if b.frames > 1] if self.images is not None else None
        still = [i for i, b in enumerate(self.buckets) if b.frames == 1]
        return lambda i: fitting_buckets(
            clips[i], self.buckets, self.frame_interval, moving if i < len(videos) else still
        )

    def image_pool(self, split: str) -> tuple[int, float] | None:
        if split != "train" or self.images is None:
            return None
        return len(self.clips()[0]), self.image_fraction

    def image_clips(self) -> list[Clip]:
        """The ``images`` as one-frame clips, labelled by their class folder when the videos have
        classes, captioned as the videos are (by class, or from ``image_captions``)."""
        if self._image_clips is None:
            entries = load_index(self.images, ImageFiles(), self.index_dir, self.strict)
            classes = self.clips()[2]
            unknown = sorted({self._class_of(r) for r in entries} - set(classes)) if classes else []
            if unknown:
                raise ValueError(
                    f"images of classes the videos do not have: {unknown[:5]}; name the image class "
                    f"folders as the videos' ({classes[:5]}...)"
                )
            labels = {rel: classes.index(self._class_of(rel)) if classes else 0 for rel in entries}
            captions = None
            if self.caption_template:
                captions = self._class_captions(list(entries), classes, labels)
            elif self.captions:
                if not self.image_captions:
                    raise CaptionError(
                        "the videos are captioned from a manifest and the images have none: give "
                        "image_captions (a manifest of the images, paths relative to images)"
                    )
                manifest = read_manifest(self.image_captions, self.images)
                captions = assign_captions(list(entries), manifest, str(self.image_captions), self.strict)
                entries = {r: v for r, v in entries.items() if r in captions}
            self._image_clips = make_clips(entries, labels, 1, 1, 1, self.strict, captions)
        return self._image_clips

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
