"""FVD features: clips in [-1, 1] -> 8-bit -> TF1 bilinear resize to 224 -> [-1, 1] -> I3D -> 400-d logits.

The preprocessing is the original (TensorFlow) FVD's: frames quantised to 8 bits as stored video is,
``tf.image.resize_bilinear`` to 224x224 (TF1 sampling grid, reproduced by torch-fidelity's
``interpolate_bilinear_2d_like_tensorflow1x``), then ``2 x / 255 - 1``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

from lit_vdit.metrics.i3d import load_i3d
from lit_vdit.metrics.weights import I3D_NETWORK, Weights

I3D_SIZE = 224


def to_uint8(clips: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded to nearest)."""
    if clips.ndim != 5 or clips.shape[1] != 3:
        raise ValueError(f"expected RGB clips (B, 3, T, H, W), got shape {tuple(clips.shape)}")
    return ((clips.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def resize_frames_tf1(frames: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> float (N, C, size, size) with TensorFlow 1's bilinear resize."""
    return interpolate_bilinear_2d_like_tensorflow1x(frames.float(), size=(size, size), align_corners=False)


class I3DFeatures(nn.Module):
    """Clips (B, 3, T, H, W) in [-1, 1] -> {"logits": (B, 400)}, the FVD features."""

    network = I3D_NETWORK
    resize = f"tf1-bilinear-{I3D_SIZE}"

    def __init__(self, weights: Weights):
        super().__init__()
        self.net = load_i3d(weights.path)
        self.sha256 = weights.sha256

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        b, c, t, h, w = clips.shape
        frames = to_uint8(clips).transpose(1, 2).reshape(b * t, c, h, w)
        x = resize_frames_tf1(frames, I3D_SIZE) * (2 / 255) - 1
        x = x.reshape(b, t, c, I3D_SIZE, I3D_SIZE).transpose(1, 2)
        return {"logits": self.net(x).float()}
