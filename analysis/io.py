"""Atomic file writes (boltons' ``AtomicSaver``: part file in the same folder, fsync, rename): a crash
never leaves a half-written report. analysis imports nothing of lit_vdit, so both call the library."""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any

from boltons.fileutils import AtomicSaver


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``data`` to ``path`` through a uniquely named part file (new-file permissions), then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    with AtomicSaver(path, part_file=part) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, to_json(obj))


def to_json(obj: Any) -> str:
    """Strict JSON: numpy values as plain numbers, NaN and infinities as null."""
    return json.dumps(_plain(obj), indent=2, allow_nan=False) + "\n"


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalar or array
        return _plain(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return str(obj)
