"""Video autoencoders. The denoiser sees ``encode_latents(x)``; samples come back via ``decode_latents``.

Interface every autoencoder here follows (the DiffusionModule relies on nothing else):
  latent_channels, temporal_compression, spatial_compression: ints
  latent_shape(frames, height, width) -> (C, T', H', W')
  encode_latents(x: (B, C, T, H, W) in [-1, 1]) -> latents scaled to about unit variance
  decode_latents(z) -> video in [-1, 1] (approximately)

``CausalVideoVAE`` is a causal 3D convolutional VAE in the spirit of CogVideoX / Open-Sora: every
convolution is padded in time on the past side only, so the first frame is encoded on its own and an
image is the T=1 case; T frames become T' = 1 + (T - 1) / temporal_compression latent frames. It is
purely convolutional (no attention), which is what makes chunked encoding with a causal cache exact.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from lit_vdit.models.fingerprint import module_fingerprint

# Causal cache for chunked encode/decode: each causal layer stores what the next chunk needs from the
# past (the last input frames of a convolution, or a "first chunk done" marker for an upsampler).
Cache = dict[nn.Module, torch.Tensor | None]


@runtime_checkable
class VideoAutoencoder(Protocol):
    """What the DiffusionModule and the latent cache use of a frozen autoencoder (CausalVideoVAE,
    IdentityVAE): clips (B, C, T, H, W) in [-1, 1] <-> scaled latents."""

    in_channels: int

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]: ...

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled latents (the posterior mode) of clips."""

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor: ...


class IdentityVAE(nn.Module):
    """Pixel-space "VAE": latents are the pixels, so a DiT trains directly on video."""

    scale_factor = 1.0

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.in_channels = channels
        self.latent_channels = channels
        self.temporal_compression = 1
        self.spatial_compression = 1

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        return (self.latent_channels, frames, height, width)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        return z


#################################################################################
#                         Causal building blocks                                #
#################################################################################


class CausalConv3d(nn.Module):
    """Conv3d padded in time on the past side only: output frame t never sees input frames after t.

    The first chunk is padded by repeating its first frame; with a cache, later chunks are padded with
    the last ``kernel_t - stride_t`` input frames of the previous chunk, so chunks give one pass's result.
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: tuple[int, int, int] = (1, 1, 1)
    ):
        super().__init__()
        self.time_pad = kernel_size - 1
        self.keep = kernel_size - stride[0]  # input frames the next chunk needs
        pad = kernel_size // 2
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size, stride=stride, padding=(0, pad, pad))

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        if self.time_pad == 0:
            return self.conv(x)
        past = cache.get(self) if cache is not None else None
        if past is None:
            past = x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1)
        x = torch.cat([past, x], dim=2)
        if cache is not None:
            cache[self] = x[:, :, x.shape[2] - self.keep :]
        return self.conv(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm applied to each frame separately.

    GroupNorm over (C, T, H, W) would let later frames change the statistics used to normalise earlier
    ones, breaking causality (and making chunked results differ from one pass); per-frame statistics
    over (C, H, W) keep every frame independent of the others.
    """

    def __init__(self, channels: int):
        super().__init__(math.gcd(32, max(channels // 4, 1)), channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(b * t, c, h, w))
        return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(in_ch)
        self.conv1 = CausalConv3d(in_ch, out_ch)
        self.norm2 = FrameGroupNorm(out_ch)
        self.conv2 = CausalConv3d(out_ch, out_ch)
        self.skip = nn.Conv3d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        h = self.conv2(F.silu(self.norm2(h)), cache)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided causal conv: halves H and W, and T (as 1 + 2m -> 1 + m) when ``time`` is set."""

    def __init__(self, channels: int, time: bool):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, stride=(2 if time else 1, 2, 2))

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        return self.conv(x, cache)


class Upsample(nn.Module):
    """Nearest 2x upsampling then a causal conv; in time 1 + m frames become 1 + 2m (the very first
    latent frame maps to one frame, every later one to two)."""

    def __init__(self, channels: int, time: bool):
        super().__init__()
        self.time = time
        self.conv = CausalConv3d(channels, channels)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(2 if self.time else 1, 2, 2), mode="nearest")
        if self.time and (cache is None or self not in cache):
            x = x[:, :, 1:]  # first chunk: frame 0 stays a single frame
        if cache is not None:
            cache[self] = None
        return self.conv(x, cache)


class Encoder(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, channels: list[int], num_res_blocks: int, time_levels: int):
        super().__init__()
        self.conv_in = CausalConv3d(in_ch, channels[0])
        blocks: list[nn.Module] = []
        ch = channels[0]
        for level, level_ch in enumerate(channels):
            for _ in range(num_res_blocks):
                blocks.append(ResBlock(ch, level_ch))
                ch = level_ch
            if level < len(channels) - 1:
                blocks.append(Downsample(ch, time=level < time_levels))
        blocks += [ResBlock(ch, ch), ResBlock(ch, ch)]
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = FrameGroupNorm(ch)
        self.conv_out = CausalConv3d(ch, out_ch)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        x = self.conv_in(x, cache)
        for block in self.blocks:
            x = block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class Decoder(nn.Module):
    """Mirror of the Encoder: the upsampler after level i undoes the encoder's downsampler after level i-1."""

    def __init__(self, in_ch: int, out_ch: int, channels: list[int], num_res_blocks: int, time_levels: int):
        super().__init__()
        ch = channels[-1]
        self.conv_in = CausalConv3d(in_ch, ch)
        blocks: list[nn.Module] = [ResBlock(ch, ch), ResBlock(ch, ch)]
        for level in reversed(range(len(channels))):
            for _ in range(num_res_blocks + 1):
                blocks.append(ResBlock(ch, channels[level]))
                ch = channels[level]
            if level > 0:
                blocks.append(Upsample(ch, time=level - 1 < time_levels))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = FrameGroupNorm(ch)
        self.conv_out = CausalConv3d(ch, out_ch)

    def forward(self, z: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        x = self.conv_in(z, cache)
        for block in self.blocks:
            x = block(x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class DiagonalGaussian:
    """Posterior N(mean, diag(exp(logvar))) from moments (B, 2C, T, H, W)."""

    def __init__(self, moments: torch.Tensor):
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(-30.0, 20.0)
        self.std = torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, averaged over latent elements: shape (B,)."""
        kl = 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)
        return kl.flatten(1).mean(1)


def _split_time(x: torch.Tensor, chunk_frames: int | None) -> Iterator[torch.Tensor]:
    """Chunks [0, 1 + n), [1 + n, 1 + 2n), ... along time (the whole tensor when chunk_frames is None)."""
    frames = x.shape[2]
    if chunk_frames is None:
        yield x
        return
    bounds = [0, *range(1 + chunk_frames, frames, chunk_frames), frames]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        yield x[:, :, start:end]


#################################################################################
#                              Causal video VAE                                 #
#################################################################################


class CausalVideoVAE(nn.Module):
    """Causal 3D convolutional VAE, compression ``temporal_compression x spatial_compression^2``.

    ``channel_mult`` gives the width of each resolution level (log2(spatial_compression) + 1 levels);
    the first log2(temporal_compression) downsamplers also halve time (as CogVideoX). ``scale_factor``
    is a buffer, so it travels in the state dict: set it from data (``1 / std`` of the latents) after
    training, and ``encode_latents`` / ``decode_latents`` apply it.
    """

    def __init__(
        self,
        in_channels: int = 3,
        latent_channels: int = 16,
        spatial_compression: int = 8,
        temporal_compression: int = 4,
        base_channels: int = 64,
        channel_mult: list[int] | None = None,
        num_res_blocks: int = 2,
    ):
        super().__init__()
        levels = _log2(spatial_compression, "spatial_compression")
        time_levels = _log2(temporal_compression, "temporal_compression")
        if time_levels > levels:
            raise ValueError(
                f"temporal_compression={temporal_compression} needs as many downsampling levels; "
                f"use temporal_compression <= spatial_compression={spatial_compression}"
            )
        if channel_mult is None:
            channel_mult = [min(2**i, 4) for i in range(levels + 1)]
        if len(channel_mult) != levels + 1:
            raise ValueError(
                f"channel_mult={list(channel_mult)} has {len(channel_mult)} levels but spatial_compression="
                f"{spatial_compression} needs log2({spatial_compression}) + 1 = {levels + 1}"
            )
        self.config = dict(
            in_channels=in_channels,
            latent_channels=latent_channels,
            spatial_compression=spatial_compression,
            temporal_compression=temporal_compression,
            base_channels=base_channels,
            channel_mult=list(channel_mult),
            num_res_blocks=num_res_blocks,
        )
        self.in_channels = in_channels
        self.latent_channels = latent_channels
        self.spatial_compression = spatial_compression
        self.temporal_compression = temporal_compression
        channels = [base_channels * m for m in channel_mult]
        self.encoder = Encoder(in_channels, 2 * latent_channels, channels, num_res_blocks, time_levels)
        self.decoder = Decoder(latent_channels, in_channels, channels, num_res_blocks, time_levels)
        self.register_buffer("scale_factor", torch.tensor(1.0))
        # Convolutions keep PyTorch's default (Kaiming-uniform) init; norms start as identity.

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        tc, sc = self.temporal_compression, self.spatial_compression
        if (frames - 1) % tc or height % sc or width % sc:
            raise ValueError(
                f"clip of {frames}x{height}x{width} (TxHxW) does not fit a {tc}x{sc}x{sc} VAE: "
                f"frames must be 1 + k*{tc} and height, width multiples of {sc}"
            )
        return (self.latent_channels, 1 + (frames - 1) // tc, height // sc, width // sc)

    def encode(self, x: torch.Tensor, chunk_frames: int | None = None) -> DiagonalGaussian:
        """Posterior for video (B, C, T, H, W); with ``chunk_frames`` (a multiple of the temporal
        compression) the video is encoded 1 + chunk_frames frames first, then chunk_frames at a time."""
        self.latent_shape(*x.shape[2:])
        if chunk_frames is not None and (chunk_frames < 1 or chunk_frames % self.temporal_compression):
            raise ValueError(
                f"chunk_frames={chunk_frames} must be a positive multiple of "
                f"temporal_compression={self.temporal_compression}"
            )
        cache: Cache | None = None if chunk_frames is None else {}
        moments = torch.cat([self.encoder(c, cache) for c in _split_time(x, chunk_frames)], dim=2)
        return DiagonalGaussian(moments)

    def decode(self, z: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """Video from unscaled latents; with ``chunk_frames`` the latents are decoded that many at a time."""
        cache: Cache | None = None if chunk_frames is None else {}
        return torch.cat([self.decoder(c, cache) for c in _split_time(z, chunk_frames)], dim=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, DiagonalGaussian]:
        posterior = self.encode(x)
        return self.decode(posterior.sample()), posterior

    def encode_latents(
        self, x: torch.Tensor, sample: bool = False, chunk_frames: int | None = None
    ) -> torch.Tensor:
        """Scaled latents (the posterior mode unless ``sample``), about unit variance."""
        posterior = self.encode(x, chunk_frames)
        z = posterior.sample() if sample else posterior.mode()
        return z * self.scale_factor

    def decode_latents(self, z: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        return self.decode(z / self.scale_factor, chunk_frames)


def _log2(value: int, name: str) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name}={value} must be a power of two (1, 2, 4, 8, ...)")
    return value.bit_length() - 1


#################################################################################
#                        Loading a trained VAE frozen                           #
#################################################################################


def load_frozen_vae(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    latent_channels: int | None = None,
    temporal_compression: int | None = None,
    spatial_compression: int | None = None,
) -> CausalVideoVAE:
    """Rebuild the VAE of a VAEModule checkpoint (``vae_config`` + ``state_dict`` with ``vae.*`` keys),
    in eval mode with gradients off. The optional ints are what the caller expects (e.g. the denoiser's
    input channels); a mismatch raises a ValueError naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"VAE checkpoint {path} does not exist; train one with `lit-vdit fit --model "
            f"configs/model/vae_demo.yaml ...` and point the vae path at its .ckpt file"
        )
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or "vae_config" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(
            f"{path} is not a VAEModule checkpoint (it needs 'vae_config' and 'state_dict' keys); "
            f"pass a checkpoint written while training lit_vdit.modules.vae_module.VAEModule"
        )
    vae = CausalVideoVAE(**ckpt["vae_config"])
    expected = dict(
        latent_channels=latent_channels,
        temporal_compression=temporal_compression,
        spatial_compression=spatial_compression,
    )
    for name, want in expected.items():
        if want is not None and getattr(vae, name) != want:
            raise ValueError(
                f"VAE checkpoint {path} has {name}={getattr(vae, name)} but the model expects {want}; "
                f"set the model's {name} to {getattr(vae, name)} or train a VAE with {name}={want}"
            )
    state = {k.removeprefix("vae."): v for k, v in ckpt["state_dict"].items() if k.startswith("vae.")}
    own = vae.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    if problems:
        raise ValueError(
            f"VAE checkpoint {path} does not match the VAE its vae_config {ckpt['vae_config']} builds "
            f"({len(problems)} problems, e.g. {'; '.join(problems[:3])}); the file was written by a "
            f"different VAE definition: retrain the VAE or fix vae_config in the checkpoint"
        )
    vae.load_state_dict(state)
    if vae.scale_factor.item() == 1.0:
        warnings.warn(f"VAE checkpoint {path} has scale_factor 1.0: was it computed from data?", stacklevel=2)
    return vae.eval().requires_grad_(False)


def vae_fingerprint(vae: nn.Module) -> str:
    """Hash of a VAE's class, compression and weights: equal for the same VAE however it was loaded."""
    names = ("latent_channels", "temporal_compression", "spatial_compression")
    return module_fingerprint(vae, {name: getattr(vae, name) for name in names})
