"""Video U-Net denoiser: pseudo-3D ResNet blocks with factorised space-time attention.

The convolutional baseline of the DiT, in the style of VDM (Ho et al. 2022), Make-A-Video and
ModelScope / diffusers ``UNet3DConditionModel``:
- every frame goes through the image U-Net (3x3 convolutions, GroupNorm per frame, spatial down- and
  upsampling with skip connections); time is mixed by a 3-tap temporal convolution after each
  spatial one (a pseudo-3D convolution) and by temporal attention at every pixel;
- spatial self-attention within frames and temporal attention across frames at the lower resolutions;
- the timestep (+ class) embedding scales and shifts the features of every ResNet block; with
  captions, every spatial attention is followed by cross-attention to the caption tokens (as Stable
  Diffusion / ModelScope), repeated for each frame;
- every residual branch and the output convolution start at zero (ADM), temporal convolutions at the
  identity (Make-A-Video), so the untrained model outputs zeros like the adaLN-Zero DiT.
It has the DiT's interface (``forward(x, t, y, text)``, ``learn_sigma``, ``null_class``, ``num_tokens``,
``embedding_parameters()``), so objectives, samplers, DataModules and grids use either. With T=1 it
is an image U-Net.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lit_vdit.models.layers import Attention, CrossAttention, LabelEmbedder, TimestepEmbedder, sincos_1d
from lit_vdit.models.text import CaptionEmbedder, TextEmbedding

# (base channels, channel multiplier per level, ResNet blocks per level): a CPU ladder matched rung by
# rung to the DiT's T0..T9 in non-embedding parameters, within 10% for 3x4x16x16 clips with DiT patch
# (1, 4, 4) and for 3x8x32x32 clips with patch (2, 4, 4). Width grows by ~1.4 and depth from one to four
# blocks per level; the smallest rung keeps the first two levels at the base width.
UNET_SIZES: dict[str, tuple[int, tuple[int, ...], int]] = {
    "U0": (4, (1, 1, 2), 1),
    "U1": (6, (1, 2, 2), 1),
    "U2": (9, (1, 2, 2), 1),
    "U3": (13, (1, 2, 2), 1),
    "U4": (19, (1, 2, 2), 1),
    "U5": (25, (1, 2, 2), 2),
    "U6": (32, (1, 2, 2), 3),
    "U7": (48, (1, 2, 2), 3),
    "U8": (64, (1, 2, 2), 4),
    "U9": (90, (1, 2, 2), 4),
}


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with as many groups as divide the channels, up to 32, of at least 4 channels each."""
    groups = max((g for g in range(1, 33) if channels % g == 0 and channels >= 4 * g), default=1)
    return nn.GroupNorm(groups, channels, eps=1e-6)


class PseudoConv3d(nn.Module):
    """3x3 convolution within each frame, then a 3-tap convolution across frames at each pixel."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.spatial = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.temporal = nn.Conv1d(out_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x: (B*T, C, H, W) frames of B clips."""
        x = self.spatial(x)
        h, w = x.shape[-2:]
        x = self.temporal(rearrange(x, "(b t) c h w -> (b h w) c t", t=frames))
        return rearrange(x, "(b h w) c t -> (b t) c h w", h=h, w=w)


class ResBlock(nn.Module):
    """Pre-norm ResNet block of two pseudo-3D convolutions; the embedding scales and shifts the second."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = PseudoConv3d(in_channels, out_channels)
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.norm2 = group_norm(out_channels)
        self.conv2 = PseudoConv3d(out_channels, out_channels)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor, frames: int) -> torch.Tensor:
        """x: (B*T, C, H, W); emb: (B*T, E), each clip's embedding repeated for its frames."""
        h = self.conv1(F.silu(self.norm1(x)), frames)
        scale, shift = self.emb(emb)[..., None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h), frames)


class AttentionBlock(nn.Module):
    """Pre-norm residual self-attention over the pixels of each frame or over the frames at each pixel;
    a spatial block of a text-conditional U-Net then cross-attends to the caption tokens."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        layout: Literal["spatial", "temporal"],
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.layout = layout
        self.norm = group_norm(channels)
        self.attn = Attention(channels, num_heads)
        self.channels = channels
        self._positions: dict[tuple, torch.Tensor] = {}  # frames -> temporal sin-cos table, when first met
        self.cross_attn = None
        if context_dim and layout == "spatial":
            self.cross_norm = group_norm(channels)
            self.cross_attn = CrossAttention(channels, context_dim, num_heads)

    def positions(self, frames: int, like: torch.Tensor) -> torch.Tensor:
        """Fixed sin-cos frame positions (T, C) of temporal attention (spatial attention needs none)."""
        key = (frames, like.device, like.dtype)
        if key not in self._positions:
            self._positions[key] = sincos_1d(self.channels, torch.arange(frames)).to(like)
        return self._positions[key]

    def forward(
        self,
        x: torch.Tensor,
        frames: int,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x: (B*T, C, H, W); context: (B*T, L, context_dim) caption tokens (each frame's copy)."""
        h, w = x.shape[-2:]
        if self.layout == "spatial":
            out = self.attn(rearrange(self.norm(x), "bt c h w -> bt (h w) c"))
            x = x + rearrange(out, "bt (h w) c -> bt c h w", h=h)
            if self.cross_attn is not None:
                queries = rearrange(self.cross_norm(x), "bt c h w -> bt (h w) c")
                out = self.cross_attn(queries, context, context_mask)
                x = x + rearrange(out, "bt (h w) c -> bt c h w", h=h)
            return x
        tokens = rearrange(self.norm(x), "(b t) c h w -> (b h w) t c", t=frames)
        out = self.attn(tokens + self.positions(frames, x))
        return x + rearrange(out, "(b h w) t c -> (b t) c h w", h=h, w=w)


class UNetStage(nn.Module):
    """One resolution: optional 2x spatial downsampling, ResNet blocks each followed (at the lower
    resolutions) by spatial and temporal attention, optional 2x spatial upsampling."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int,
        emb_dim: int,
        num_heads: int | None,
        resample: Literal["down", "up"] | None = None,
        context_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.down = (
            nn.Conv2d(in_channels, in_channels, 3, stride=2, padding=1) if resample == "down" else None
        )
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, out_channels, emb_dim) for i in range(depth)
        )
        self.attn_blocks = nn.ModuleList(
            AttentionBlock(out_channels, num_heads, layout, context_dim)
            for _ in range(depth if num_heads else 0)
            for layout in ("spatial", "temporal")
        )
        self.up = nn.Conv2d(out_channels, out_channels, 3, padding=1) if resample == "up" else None

    def forward(
        self,
        x: torch.Tensor,
        emb: torch.Tensor,
        frames: int,
        context: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.down is not None:
            x = self.down(x)
        for i, block in enumerate(self.res_blocks):
            x = block(x, emb, frames)
            if self.attn_blocks:
                x = self.attn_blocks[2 * i](x, frames, context, context_mask)
                x = self.attn_blocks[2 * i + 1](x, frames)
        if self.up is not None:
            x = self.up(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class VideoUNet(nn.Module):
    """Video U-Net denoiser: ``forward(x, t, y, text) -> prediction`` on (B, C, T, H, W) latents.

    Args:
        input_shape: latent clip shape (C, T, H, W); H and W must be divisible by 2^(levels - 1).
        num_classes: number of classes; 0 trains an unconditional model.
        preset: a size from ``UNET_SIZES`` ("U0".."U9"); explicit sizes override it.
        channels, channel_mult, num_res_blocks: base width, width multiplier per level, blocks per level.
        attention_levels: levels (0 = full resolution) with spatial and temporal attention;
            default every level but the first.
        head_dim: attention head width (a narrower layer uses one head).
        learn_sigma: also predict the variance interpolation (improved DDPM), doubling output channels.
        class_dropout_prob: label dropout for classifier-free guidance (adds a "null" class row).
        text_dim: width of the caption token embeddings (given by the DiffusionModule); None builds a
            model without text conditioning. Captions are projected to the embedding width and
            cross-attended to after every spatial attention.
        caption_dropout_prob: caption dropout for classifier-free guidance (adds a learned null caption).
        max_tokens: the most latent positions (T*H*W) a clip may have; None: those of ``input_shape``.
            Any clip of ``C`` channels with H and W divisible by 2^(levels - 1) is taken, up to this size.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int, int],
        num_classes: int = 0,
        preset: str = "U3",
        channels: int | None = None,
        channel_mult: tuple[int, ...] | None = None,
        num_res_blocks: int | None = None,
        attention_levels: tuple[int, ...] | None = None,
        head_dim: int = 32,
        learn_sigma: bool = False,
        class_dropout_prob: float = 0.1,
        text_dim: int | None = None,
        caption_dropout_prob: float = 0.1,
        max_tokens: int | None = None,
    ) -> None:
        super().__init__()
        if preset not in UNET_SIZES:
            raise ValueError(f"unknown U-Net preset {preset!r}; choose one of {sorted(UNET_SIZES)}")
        preset_channels, preset_mult, preset_blocks = UNET_SIZES[preset]
        channels = channels or preset_channels
        channel_mult = tuple(channel_mult or preset_mult)
        num_res_blocks = num_res_blocks or preset_blocks
        levels = len(channel_mult)
        attention_levels = tuple(range(1, levels) if attention_levels is None else attention_levels)
        in_channels, frames, height, width = (int(s) for s in input_shape)
        if height % 2 ** (levels - 1) or width % 2 ** (levels - 1):
            raise ValueError(
                f"a U-Net with {levels} levels halves H and W {levels - 1} times: (H, W)=({height}, {width}) "
                f"must be divisible by {2 ** (levels - 1)}; use fewer levels (channel_mult) or another size"
            )

        self.input_shape = (in_channels, frames, height, width)
        self.in_channels = in_channels
        self.learn_sigma = learn_sigma
        self.out_channels = 2 * in_channels if learn_sigma else in_channels
        self.num_classes = num_classes
        self.num_tokens = frames * height * width  # D counts latent positions: the U-Net has no patches
        self.max_tokens = int(max_tokens or self.num_tokens)
        self.spatial_multiple = 2 ** (levels - 1)
        widths = [channels * m for m in channel_mult]
        emb_dim = widths[-1]

        def heads(level: int) -> int | None:
            return max(1, widths[level] // head_dim) if level in attention_levels else None

        self.t_embedder = TimestepEmbedder(emb_dim)
        self.y_embedder = LabelEmbedder(num_classes, emb_dim, class_dropout_prob) if num_classes else None
        self.caption_embedder = CaptionEmbedder(text_dim, emb_dim, caption_dropout_prob) if text_dim else None
        context_dim = emb_dim if text_dim else None
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down = nn.ModuleList(
            UNetStage(
                widths[level - 1] if level else channels,
                widths[level],
                num_res_blocks,
                emb_dim,
                heads(level),
                "down" if level else None,
                context_dim,
            )
            for level in range(levels)
        )
        # The middle: two ResNet blocks, each with attention, at the lowest resolution (as in ADM).
        self.mid = UNetStage(
            widths[-1], widths[-1], 2, emb_dim, max(1, widths[-1] // head_dim), None, context_dim
        )
        self.up = nn.ModuleList(
            UNetStage(
                (widths[level + 1] if level + 1 < levels else widths[-1]) + widths[level],
                widths[level],
                num_res_blocks,
                emb_dim,
                heads(level),
                "up" if level else None,
                context_dim,
            )
            for level in reversed(range(levels))
        )
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        self.initialize_weights()

    @property
    def null_class(self) -> int | None:
        """Label that means "no class" for classifier-free guidance (None when not trained with one)."""
        return self.y_embedder.null_class if self.y_embedder is not None else None

    @property
    def null_caption(self) -> bool:
        """Trained with caption dropout: ``TextEmbedding.drop`` selects its null caption (guidance)."""
        return self.caption_embedder is not None and self.caption_embedder.null_token is not None

    @property
    def conditioning(self) -> str:
        """ "text-cross", "class" or "none"."""
        if self.caption_embedder is not None:
            return "text-cross"
        return "class" if self.num_classes else "none"

    def fsdp_units(self) -> list[nn.Module]:
        """The stages, sharded and checkpointed one at a time by :func:`lit_vdit.parallel.parallelize`."""
        return [*self.down, self.mid, *self.up]

    def initialize_weights(self) -> None:
        # Convolutions keep PyTorch's default (Kaiming-uniform) initialisation, as in ADM.
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for module in self.modules():
            if isinstance(module, PseudoConv3d):  # temporal convolutions start as the identity
                nn.init.dirac_(module.temporal.weight)
                nn.init.zeros_(module.temporal.bias)
        # Every residual branch and the output start at zero.
        zero = [self.conv_out]
        for stage in self.fsdp_units():
            zero += [block.conv2.spatial for block in stage.res_blocks]
            zero += [block.attn.proj for block in stage.attn_blocks]
            zero += [block.cross_attn.proj for block in stage.attn_blocks if block.cross_attn is not None]
        for module in zero:
            nn.init.zeros_(module.weight)
            nn.init.zeros_(module.bias)

    def embedding_parameters(self) -> int:
        """Parameters of lookup tables (the class embedding, the null caption), excluded from
        non-embedding N."""
        table = self.y_embedder.embedding_table.weight.numel() if self.y_embedder is not None else 0
        null = self.caption_embedder.embedding_parameters() if self.caption_embedder is not None else 0
        return table + null

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        text: TextEmbedding | None = None,
    ) -> torch.Tensor:
        """x: (B, C, T, H, W) noisy latents, t: (B,) timesteps, y: (B,) class labels or None,
        text: the captions' (B, L, text_dim) tokens and mask, or None."""
        if isinstance(x, list):
            raise ValueError(
                "VideoUNet takes batches of one clip shape, not packs: drop the data's pack_positions"
            )
        _, channels, frames, height, width = x.shape
        m = self.spatial_multiple
        if (
            channels != self.in_channels
            or height % m
            or width % m
            or frames * height * width > self.max_tokens
        ):
            raise ValueError(
                f"VideoUNet takes (C, T, H, W) clips with C={self.in_channels}, H and W divisible by {m} and "
                f"at most max_tokens={self.max_tokens} positions (T*H*W); got {tuple(x.shape[1:])}: resize "
                f"or crop the clip to such a shape, or build the model with a larger max_tokens"
            )
        c = self.t_embedder(t)
        if self.y_embedder is not None:
            if y is None:
                raise ValueError("this VideoUNet is class-conditional (num_classes > 0): pass labels y")
            c = c + self.y_embedder(y, self.training)
        emb = c.repeat_interleave(frames, dim=0)
        context = context_mask = None
        if self.caption_embedder is not None:
            if text is None:
                raise ValueError("this VideoUNet is text-conditional (text_dim set): pass the captions' text")
            context, context_mask = self.caption_embedder(text)  # (B, L, emb_dim), (B, L)
            context = context.repeat_interleave(frames, dim=0)  # one copy per frame: (B*T, L, emb_dim)
            context_mask = context_mask.repeat_interleave(frames, dim=0)
        h = self.conv_in(rearrange(x, "b c t h w -> (b t) c h w"))
        skips = []
        for stage in self.down:
            h = stage(h, emb, frames, context, context_mask)
            skips.append(h)
        h = self.mid(h, emb, frames, context, context_mask)
        for stage in self.up:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb, frames, context, context_mask)
        h = self.conv_out(F.silu(self.norm_out(h)))
        return rearrange(h, "(b t) c h w -> b c t h w", t=frames)
