"""Where video datasets come from: layouts (video files, frame folders) and the scan index.

A *layout* knows how to list a dataset's videos, probe one (frame count, fps) and read given frames;
:func:`load_index` probes every video once and keeps the result in a JSON index keyed by each
file's size and mtime, so later starts only ``stat`` the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import numpy as np
from PIL import Image

from lit_vdit.io import atomic_write_json

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mov", ".mkv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
INDEX_FORMAT = 2  # 2: entries hold the native height and width (buckets by aspect ratio)


class VideoDecodeError(RuntimeError):
    """A video (or one of its frames) that cannot be read."""


def _natural_key(name: str) -> list[Any]:
    """``frame_10.jpg`` sorts after ``frame_9.jpg``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# -- layouts -----------------------------------------------------------------------------------------
class Layout(Protocol):
    name: str

    def scan(self, root: Path) -> dict[str, list[int]]:
        """Videos under ``root``: relative path -> change key (compared to decide whether to re-probe)."""

    def probe(self, path: Path) -> dict[str, Any]:
        """``{"frames": int, "fps": float | None, "height": int, "width": int}`` (native size); raises
        :class:`VideoDecodeError` if unreadable."""

    def read(self, path: Path, indices: list[int], fps: float | None) -> np.ndarray:
        """Frames ``indices`` (increasing) as (T, H, W, 3) uint8; raises :class:`VideoDecodeError`."""


@dataclass(frozen=True)
class VideoFiles:
    """Video files (mp4, avi, webm, mov, mkv) anywhere under the root, decoded with PyAV."""

    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    name: str = "video_files"

    def scan(self, root: Path) -> dict[str, list[int]]:
        found = {}
        for folder, _, files in os.walk(root):
            for file in files:
                if file.lower().endswith(self.extensions):
                    st = os.stat(os.path.join(folder, file))
                    found[os.path.relpath(os.path.join(folder, file), root)] = [st.st_size, st.st_mtime_ns]
        return found

    def probe(self, path: Path) -> dict[str, Any]:
        if path.stat().st_size == 0:
            raise VideoDecodeError("empty file (0 bytes)")
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise VideoDecodeError("no video stream")
                stream = container.streams.video[0]
                fps = stream.average_rate or stream.guessed_rate
                if not fps:
                    raise VideoDecodeError("unknown frame rate")
                # Packets actually present (headers of truncated files overstate the count).
                frames = sum(1 for packet in container.demux(stream) if packet.size)
            with av.open(str(path)) as container:
                first = next(container.decode(video=0))
        except (av.FFmpegError, OSError, ValueError, StopIteration) as e:
            raise VideoDecodeError(f"cannot decode: {e or type(e).__name__}") from e
        return {"frames": frames, "fps": float(fps), "height": first.height, "width": first.width}

    def read(self, path: Path, indices: list[int], fps: float | None) -> np.ndarray:
        wanted, out = set(indices), {}
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                base, tb, rate = stream.start_time or 0, stream.time_base, Fraction(fps)
                if indices[0] > 0:  # to the keyframe before the first frame (half a frame early)
                    container.seek(base + int((indices[0] - Fraction(1, 2)) / (rate * tb)), stream=stream)
                for frame in container.decode(stream):
                    i = round((frame.pts - base) * tb * rate)
                    if i in wanted:
                        out[i] = frame.to_ndarray(format="rgb24")
                    if i >= indices[-1]:
                        break
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoDecodeError(f"{path}: {e}") from e
        if len(out) < len(wanted):
            raise VideoDecodeError(f"{path}: frames {sorted(wanted - set(out))[:4]}... missing (truncated?)")
        return np.stack([out[i] for i in indices])


@dataclass(frozen=True)
class FrameFolders:
    """Folders of numbered image frames (SkyTimelapse / StyleGAN-V): every folder holding images is
    one video, its frames in numeric order."""

    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    name: str = "frame_folders"

    def frames(self, folder: Path) -> list[str]:
        return sorted(
            (f for f in os.listdir(folder) if f.lower().endswith(self.extensions)), key=_natural_key
        )

    def scan(self, root: Path) -> dict[str, list[int]]:
        found = {}
        for folder, _, files in os.walk(root):
            count = sum(f.lower().endswith(self.extensions) for f in files)
            if count:
                found[os.path.relpath(folder, root)] = [count, os.stat(folder).st_mtime_ns]
        return found

    def probe(self, path: Path) -> dict[str, Any]:
        names = self.frames(path)
        empty = [n for n in names if (path / n).stat().st_size == 0]
        if empty:
            raise VideoDecodeError(f"empty frame file {empty[0]} (0 bytes)")
        height, width = self.read(path, [0], None).shape[1:3]
        return {"frames": len(names), "fps": None, "height": int(height), "width": int(width)}

    def read(self, path: Path, indices: list[int], fps: float | None) -> np.ndarray:
        names = self.frames(path)
        try:
            frames = []
            for i in indices:
                with Image.open(path / names[i]) as image:
                    frames.append(np.asarray(image.convert("RGB")))
        except (OSError, IndexError) as e:
            raise VideoDecodeError(f"{path}: {e}") from e
        return np.stack(frames)


@dataclass(frozen=True)
class ImageFiles:
    """Image files anywhere under the root, each a one-frame video (image + video joint training)."""

    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    name: str = "image_files"

    def scan(self, root: Path) -> dict[str, list[int]]:
        return VideoFiles(self.extensions).scan(root)

    def probe(self, path: Path) -> dict[str, Any]:
        if path.stat().st_size == 0:
            raise VideoDecodeError("empty file (0 bytes)")
        height, width = self.read(path, [0], None).shape[1:3]
        return {"frames": 1, "fps": None, "height": int(height), "width": int(width)}

    def read(self, path: Path, indices: list[int], fps: float | None) -> np.ndarray:
        try:
            with Image.open(path) as image:
                frame = np.asarray(image.convert("RGB"))
        except OSError as e:
            raise VideoDecodeError(f"{path}: {e}") from e
        return np.stack([frame for _ in indices])


# -- index -------------------------------------------------------------------------------------------
def index_path(root: str | Path, layout: Layout, index_dir: str | Path | None = None) -> Path:
    """Where the index of ``root`` lives: ``index_dir`` or ``$XDG_CACHE_HOME/lit_vdit/index``."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lit_vdit" / "index"
    digest = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return Path(index_dir or cache) / f"{layout.name}-{digest}.json"


def load_index(
    root: str | Path, layout: Layout, index_dir: str | Path | None = None, strict: bool = False
) -> dict[str, dict[str, Any]]:
    """Readable videos under ``root``: relative path -> ``{"frames", "fps", "height", "width"}``.

    Only videos that are new or changed (size / mtime) since the saved index are probed. An
    unreadable video is skipped with one warning line (and a summary count), or raises a
    :class:`VideoDecodeError` naming it when ``strict``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    file = index_path(root, layout, index_dir)
    saved: dict[str, Any] = {}
    if file.is_file():
        saved = json.loads(file.read_text())
        if saved.get("format") != INDEX_FORMAT or saved.get("root") != str(root.resolve()):
            saved = {}
    old = {**saved.get("videos", {}), **saved.get("bad", {})}
    videos, bad, probed = {}, {}, 0
    for rel, key in sorted(layout.scan(root).items()):
        entry = old.get(rel)
        if entry is None or entry["key"] != key:
            probed += 1
            try:
                entry = {"key": key, **layout.probe(root / rel)}
            except VideoDecodeError as e:
                entry = {"key": key, "error": str(e)}
                if not strict:
                    log.warning("skipping unreadable video %s: %s", root / rel, e)
        if "error" in entry:
            if strict:
                raise VideoDecodeError(f"unreadable video {root / rel}: {entry['error']} (strict=True)")
            bad[rel] = entry
        else:
            videos[rel] = entry
    if probed or set(old) != set(videos) | set(bad):
        atomic_write_json(
            file, {"format": INDEX_FORMAT, "root": str(root.resolve()), "videos": videos, "bad": bad}
        )
    if bad:
        log.warning(
            "%d of %d videos under %s are unreadable and skipped (index: %s)",
            len(bad),
            len(videos) + len(bad),
            root,
            file,
        )
    if not videos:
        raise ValueError(f"no readable videos under {root} ({layout.name}, {len(bad)} unreadable)")
    return videos
