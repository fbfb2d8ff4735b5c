"""Cache of real-data features, one file per dataset + protocol + network, written atomically.

``<cache_dir>/<dataset>-<network>-<real_key>.npz`` holds the float32 features (one array per feature
name); a ``.json`` beside it records the protocol fields it depends on, for people reading the folder.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from lit_vdit.io import atomic_write_bytes, atomic_write_json
from lit_vdit.metrics.protocol import Protocol


def cache_path(cache_dir: str | Path, protocol: Protocol) -> Path:
    """File for the real features of ``protocol`` (already specialised to a network)."""
    name = re.sub(r"[^\w.-]+", "_", f"{protocol.dataset}-{protocol.network}")
    return Path(cache_dir).expanduser() / f"{name}-{protocol.real_key()}.npz"


def load_features(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def save_features(path: Path, features: dict[str, np.ndarray], protocol: Protocol) -> None:
    buf = io.BytesIO()
    np.savez(buf, **features)
    atomic_write_bytes(path, buf.getvalue())
    atomic_write_json(path.with_suffix(".json"), protocol.real_fields())
