"""Captions of real videos: a manifest (Open-Sora's CSV ``path,text``, or JSON lines) or a template of
the class name (UCF-101: "a video of a person doing apply eye makeup").

Paths in a manifest are relative to the dataset root (or absolute, under it). A manifest that cannot
be read is an error; rows naming videos that are not there, and videos without a caption, are errors
when ``strict``, else skipped with one warning line and a count, as unreadable videos are.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".json")


class CaptionError(ValueError):
    """A caption manifest that cannot be used (unreadable, wrong columns, missing captions under strict)."""


def read_manifest(manifest: str | Path, root: str | Path) -> dict[str, str]:
    """``{video path relative to root: caption}`` from a CSV with ``path`` and ``text`` columns (Open-Sora's
    layout; other columns are ignored) or JSON lines of ``{"path": ..., "text": ...}``."""
    file, root = Path(manifest), Path(root).resolve()
    if not file.is_file():
        raise CaptionError(f"caption manifest {file} does not exist")
    if not file.name.lower().endswith(MANIFEST_SUFFIXES):
        raise CaptionError(f"caption manifest {file}: expected a .csv (path,text) or .jsonl file")
    try:
        if file.name.lower().endswith(".csv"):
            with open(file, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = {"path", "text"} - set(reader.fieldnames or [])
                if missing:
                    raise CaptionError(
                        f"caption manifest {file} has columns {reader.fieldnames}, lacking "
                        f"{sorted(missing)}: a CSV manifest needs a header with `path` and `text` "
                        f"(Open-Sora's layout)"
                    )
                rows = [(row["path"], row["text"]) for row in reader]
        else:
            rows = []
            for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    entry = json.loads(line)
                    if not isinstance(entry, dict) or "path" not in entry or "text" not in entry:
                        raise CaptionError(f'{file} line {number}: expected {{"path": ..., "text": ...}}')
                    rows.append((entry["path"], entry["text"]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as error:
        raise CaptionError(f"cannot read caption manifest {file}: {error}") from error
    captions = {}
    for path, text in rows:
        resolved = Path(path) if os.path.isabs(path) else root / path
        captions[os.path.relpath(os.path.normpath(resolved), root)] = (text or "").strip()
    return captions


def readable_class(name: str) -> str:
    """``ApplyEyeMakeup`` / ``apply_eye_makeup`` -> ``apply eye makeup``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-]+", " ", name).split()
    return " ".join(w.lower() for w in words)


def assign_captions(videos: list[str], manifest: dict[str, str], source: str, strict: bool) -> dict[str, str]:
    """Each video's caption from ``manifest``; rows naming absent videos and videos without a caption
    raise (``strict``) or are left out with a warning and a count."""
    present = set(videos)
    absent = sorted(p for p in manifest if p not in present)
    uncaptioned = sorted(v for v in videos if not manifest.get(v))
    if strict and (absent or uncaptioned):
        problems = []
        if absent:
            problems.append(
                f"{len(absent)} rows name videos that are missing or unreadable (e.g. {absent[0]})"
            )
        if uncaptioned:
            problems.append(f"{len(uncaptioned)} videos have no caption (e.g. {uncaptioned[0]})")
        raise CaptionError(
            f"caption manifest {source}: {'; '.join(problems)} (strict=True): fix the manifest, or set "
            f"strict: false to skip them"
        )
    if absent:
        log.warning(
            "%s: %d rows name missing or unreadable videos, skipped (e.g. %s)", source, len(absent), absent[0]
        )
    if uncaptioned:
        log.warning(
            "%s: %d of %d videos have no caption and are skipped (e.g. %s)",
            source,
            len(uncaptioned),
            len(videos),
            uncaptioned[0],
        )
    return {v: manifest[v] for v in videos if manifest.get(v)}
