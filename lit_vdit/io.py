"""Atomic file writes: a crash never leaves a half-written result, checkpoint or table."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from boltons.fileutils import AtomicSaver


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a part file in the same folder, fsynced, then renamed.

    boltons' ``AtomicSaver`` creates the part file with ``os.open(..., 0o666)``, so a new file gets
    the permissions of any new file (0644 under the usual umask 022), not ``mkstemp``'s 0600: run
    folders are shared on clusters. The part file's name is unique, so concurrent writers (ranks,
    runs of a grid) never share one and a part file left by a killed process blocks nothing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part"
    with AtomicSaver(path, part_file=part) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (weights and checkpoints are identified by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(items: Any, length: int = 16) -> str:
    """Short stable hash (``length`` hex digits) of JSON-able data: a clip list, an identity, a protocol."""
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:length]
