"""Video autoencoders. The denoiser sees ``encode_latents(x)``; samples come back via ``decode_latents``.

Interface every autoencoder here follows (the DiffusionModule relies on nothing else):
  latent_channels, temporal_compression, spatial_compression: ints
  latent_shape(frames, height, width) -> (C, T', H', W')
  encode_latents(x: (B, C, T, H, W) in [-1, 1]) -> latents scaled to about unit variance
  decode_latents(z) -> video in [-1, 1] (approximately)
"""

from __future__ import annotations

import torch
from torch import nn


class IdentityVAE(nn.Module):
    """Pixel-space "VAE": latents are the pixels, so a DiT trains directly on video."""

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.latent_channels = channels
        self.temporal_compression = 1
        self.spatial_compression = 1

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return (self.latent_channels, frames, height, width)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z
