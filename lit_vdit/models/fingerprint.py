"""Fingerprints of frozen networks (VAE, text encoder): what caches and checkpoints are keyed by."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn


def module_fingerprint(module: nn.Module, settings: dict[str, Any]) -> str:
    """Hash of a module's class, the ``settings`` that change its outputs, and its weights: equal for
    the same network however it was loaded."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, value in settings.items():
        digest.update(f"{name}={value}".encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
