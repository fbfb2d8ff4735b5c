"""Checkpoints written atomically: a run killed mid-save keeps its previous checkpoint intact."""

from __future__ import annotations

import io
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_vdit.io import atomic_write_bytes


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint format, saved through a temporary file and ``os.replace``.

    Lightning's own writer streams into the final path, so a SIGKILL during a save would leave a
    truncated ``last.ckpt`` and a grid could not resume that run.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())
