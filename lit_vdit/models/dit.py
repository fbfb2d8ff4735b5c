"""Video Diffusion Transformer (DiT): spatiotemporal patches -> adaLN-Zero transformer -> patches.

Follows facebookresearch/DiT (Peebles & Xie 2023) and extends it to video:
- patches of size (pt, ph, pw) over a (C, T, H, W) latent clip;
- fixed 3D sin-cos position embedding, or 3D RoPE inside attention;
- clips of any (T, H, W) divisible by the patch, up to ``max_tokens`` tokens: position tables and
  RoPE angles are computed for each batch's token grid (and kept); images are T=1 clips;
- attention layout ``full`` (joint space-time attention, as CogVideoX / Sora) or ``interleaved``
  (alternating spatial and temporal blocks, as Latte);
- text conditioning on caption tokens: ``cross`` attention in every block (PixArt-alpha, Open-Sora
  STDiT), ``joint`` text-video self-attention with per-modality adaLN (CogVideoX's expert adaLN,
  MM-DiT), or ``pooled`` caption added to the timestep embedding.
With T=1 and patch (1, 2, 2) the model and its parameter count are exactly DiT's.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as dist
from einops import rearrange
from torch import nn

from lit_vdit.models.dit_blocks import DiTBlock, FinalLayer, Pack, PatchEmbed3D
from lit_vdit.models.image_init import inflate_image_dit
from lit_vdit.models.layers import (
    LabelEmbedder,
    Rotary,
    RotaryEmbedding3D,
    TimestepEmbedder,
    sincos_2d,
    sincos_3d,
    sincos_temporal,
)
from lit_vdit.models.mup import MuP, learning_rate_scales, shapes_and_base, widen_init_
from lit_vdit.models.sequence_parallel import SequenceShard
from lit_vdit.models.text import CaptionEmbedder, TextEmbedding, masked_mean

TextConditioning = Literal["cross", "joint", "pooled"]

# (hidden size, depth, heads). DiT's family; patch size is given as "S/2", "XL/8", ...
DIT_SIZES: dict[str, tuple[int, int, int]] = {
    "S": (384, 12, 6),
    "B": (768, 12, 12),
    "L": (1024, 24, 16),
    "XL": (1152, 28, 16),
}
# A CPU ladder, ~15K to ~23M parameters at about x2.2 per rung: width grows by ~sqrt(2) per rung,
# depth by ~1.25, head dim is 16 up to width 64 and 32 above.
LADDER_SIZES: dict[str, tuple[int, int, int]] = {
    "T0": (16, 2, 1),
    "T1": (24, 3, 2),
    "T2": (32, 4, 2),
    "T3": (48, 4, 3),
    "T4": (64, 5, 4),
    "T5": (96, 6, 3),
    "T6": (128, 8, 4),
    "T7": (192, 8, 6),
    "T8": (256, 10, 8),
    "T9": (320, 12, 10),
}
PRESETS: dict[str, tuple[int, int, int]] = {**DIT_SIZES, **LADDER_SIZES}
# Weights initialised with std 0.02 (DiT's); the other Linear / Conv weights are Xavier's or zeros.
NORMAL_INIT = ("y_embedder.embedding_table.weight", "t_embedder.mlp.0.weight", "t_embedder.mlp.2.weight")


def parse_preset(preset: str) -> tuple[tuple[int, int, int], int | None]:
    """``"XL/2"`` -> ((1152, 28, 16), 2); ``"T3"`` -> ((48, 4, 3), None)."""
    name, _, patch = preset.partition("/")
    if name not in PRESETS:
        raise ValueError(f"unknown DiT preset {preset!r}; choose one of {sorted(PRESETS)} (e.g. 'S/2', 'T3')")
    if patch and patch not in {"2", "4", "8"}:
        raise ValueError(f"DiT preset {preset!r}: patch size must be 2, 4 or 8")
    return PRESETS[name], int(patch) if patch else None


class VideoDiT(nn.Module):
    """Video DiT denoiser: ``forward(x, t, y, text) -> prediction`` on (B, C, T, H, W) latents.

    Args:
        input_shape: latent clip shape (C, T, H, W).
        num_classes: number of classes; 0 trains an unconditional model.
        preset: a size from ``PRESETS`` ("S/2", "XL/2", "T3", ...); explicit sizes override it.
        patch_size: (pt, ph, pw); defaults to (1, p, p) from the preset, or (1, 2, 2).
        learn_sigma: also predict the variance interpolation (improved DDPM), doubling output channels.
        class_dropout_prob: label dropout for classifier-free guidance (adds a "null" class row).
        attention: "full" joint space-time attention or "interleaved" spatial/temporal blocks.
        position: "sincos" fixed 3D embedding added to tokens, or "rope" 3D rotary in attention.
        text_dim: width of the caption token embeddings (the text encoder's ``dim``, given by the
            DiffusionModule); None builds a model without text conditioning.
        text_conditioning: how captions condition the model: "cross" attention in every block,
            "joint" text-video attention, or "pooled" (masked mean of the caption tokens added to the
            timestep embedding).
        caption_dropout_prob: caption dropout for classifier-free guidance (adds a learned null caption).
        max_tokens: the most tokens a clip may have; None: those of ``input_shape``. Any clip of
            ``C`` channels whose (T, H, W) the patch divides is taken, up to this many tokens.
        temporal_gate: scale the temporal part of the sin-cos table by a learned per-channel gate,
            zero at init (so a static clip's frames start out position-identical); None: on when
            initialised from an image DiT.
        init_checkpoint: a facebookresearch/DiT image checkpoint (``.pt``, loaded with
            ``weights_only=True``) to initialise from (:func:`lit_vdit.models.image_init.inflate_image_dit`).
        mup_base_width: muP (:mod:`lit_vdit.models.mup`) anchored at this width: init, output and
            attention multipliers and per-parameter learning rates (:meth:`learning_rate_scales`) such
            that a learning rate tuned at one width transfers to others; at ``hidden_size`` equal to it
            the model is the standard one. None: standard parametrisation.
        mup_base_heads: heads of muP's base model; None keeps the head dim (heads grow with width, as
            DiT's presets); give ``num_heads`` for models grown at a fixed head count.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int, int],
        num_classes: int = 0,
        preset: str = "S/2",
        hidden_size: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        patch_size: tuple[int, int, int] | None = None,
        mlp_ratio: float = 4.0,
        learn_sigma: bool = False,
        class_dropout_prob: float = 0.1,
        attention: Literal["full", "interleaved"] = "full",
        position: Literal["sincos", "rope"] = "sincos",
        qk_norm: bool = False,
        text_dim: int | None = None,
        text_conditioning: TextConditioning = "cross",
        caption_dropout_prob: float = 0.1,
        max_tokens: int | None = None,
        temporal_gate: bool | None = None,
        init_checkpoint: str | None = None,
        mup_base_width: int | None = None,
        mup_base_heads: int | None = None,
    ) -> None:
        super().__init__()
        settings = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # muP's base model
        (preset_hidden, preset_depth, preset_heads), preset_patch = parse_preset(preset)
        hidden_size = hidden_size or preset_hidden
        depth = depth or preset_depth
        num_heads = num_heads or preset_heads
        if patch_size is None:
            patch_size = (1, preset_patch or 2, preset_patch or 2)
        patch_size = tuple(int(p) for p in patch_size)
        channels, frames, height, width = (int(s) for s in input_shape)
        for name, size, p in zip(
            ("frames (T)", "height (H)", "width (W)"), (frames, height, width), patch_size, strict=True
        ):
            if size % p:
                raise ValueError(
                    f"patch size {patch_size} does not divide the input {name}={size}: choose a patch size "
                    f"that divides (T, H, W)=({frames}, {height}, {width}) or change the clip shape"
                )
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        if init_checkpoint is not None and mup_base_width is not None:
            raise ValueError("init_checkpoint: an image DiT is standard-parametrised; drop mup_base_width")
        if init_checkpoint is not None and position != "sincos":
            raise ValueError(
                "init_checkpoint: facebookresearch/DiT's image models use a fixed sin-cos position table; "
                "build the video DiT with position='sincos' to initialise it from one"
            )
        if attention not in ("full", "interleaved"):
            raise ValueError(f"attention must be 'full' or 'interleaved', got {attention!r}")
        if position not in ("sincos", "rope"):
            raise ValueError(f"position must be 'sincos' or 'rope', got {position!r}")
        if text_conditioning not in ("cross", "joint", "pooled"):
            raise ValueError(
                f"text_conditioning must be 'cross', 'joint' or 'pooled', got {text_conditioning!r}"
            )
        if text_dim and text_conditioning == "joint" and attention != "full":
            raise ValueError(
                "joint text-video attention attends over all video tokens at once: use attention='full', or "
                "text_conditioning='cross' with interleaved attention"
            )

        self.input_shape = (channels, frames, height, width)
        self.in_channels = channels
        self.learn_sigma = learn_sigma
        self.out_channels = 2 * channels if learn_sigma else channels
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.grid = (frames // patch_size[0], height // patch_size[1], width // patch_size[2])
        self.num_tokens = self.grid[0] * self.grid[1] * self.grid[2]
        self.max_tokens = int(max_tokens or self.num_tokens)
        if self.max_tokens < self.num_tokens:
            raise ValueError(
                f"max_tokens={self.max_tokens} is below the {self.num_tokens} tokens of input_shape "
                f"{tuple(input_shape)}: raise max_tokens or build for a smaller input_shape"
            )
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.sequence: SequenceShard | None = None  # sequence parallelism: shard_sequence
        self.mup_base_width = mup_base_width
        mup, attention_scale, out_multiplier = None, None, None  # the standard parametrisation
        if mup_base_width is not None:
            mup = MuP.at(hidden_size, num_heads, mup_base_width, mup_base_heads)
            attention_scale, out_multiplier = mup.attention_scale, mup.output_multiplier

        self.x_embedder = PatchEmbed3D(patch_size, channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob) if num_classes else None
        self.text_conditioning = text_conditioning if text_dim else None
        self.caption_embedder = (
            CaptionEmbedder(text_dim, hidden_size, caption_dropout_prob) if text_dim else None
        )
        # Fixed (not trained) sin-cos table, kept as a frozen parameter as in DiT so that parameter
        # counts match the paper; RoPE instead rotates queries and keys inside attention.
        # Other grids' tables are computed when first met (position_table) and kept.
        gated = (init_checkpoint is not None) if temporal_gate is None else temporal_gate
        self.temporal_gate = (
            nn.Parameter(torch.zeros(hidden_size)) if gated and position == "sincos" else None
        )
        if position == "sincos":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, hidden_size), requires_grad=False)
            self.rope = None
        else:
            self.pos_embed = None
            self.rope = RotaryEmbedding3D(hidden_size // num_heads)
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        layouts = (
            ["full"] * depth
            if attention == "full"
            else ["spatial", "temporal"] * (depth // 2) + ["spatial"] * (depth % 2)
        )
        block_text = self.text_conditioning if self.text_conditioning in ("cross", "joint") else None
        self.blocks = nn.ModuleList(
            DiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm, layout, block_text, attention_scale)
            for layout in layouts
        )
        self.final_layer = FinalLayer(hidden_size, math.prod(patch_size), self.out_channels, out_multiplier)
        self._mup_shapes: dict[str, tuple[torch.Size, torch.Size]] = {}  # muP: name -> (shape, base shape)
        if mup is not None:
            with torch.device("meta"):
                self._mup_shapes = shapes_and_base(self, VideoDiT(**{**settings, **mup.base_settings()}))
        self.initialize_weights()
        if init_checkpoint is not None:
            inflate_image_dit(self, init_checkpoint)

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
        """ "text-cross", "text-joint", "text-pooled", "class" or "none"."""
        if self.text_conditioning:
            return f"text-{self.text_conditioning}"
        return "class" if self.num_classes else "none"

    def initialize_weights(self) -> None:
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(_basic_init)
        if self.pos_embed is not None:
            self.pos_embed.data.copy_(sincos_3d(self.hidden_size, self.grid).unsqueeze(0))
        if self.temporal_gate is not None:
            nn.init.zeros_(self.temporal_gate)
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        params = dict(self.named_parameters())
        for name in NORMAL_INIT:
            if name in params:  # no class table in an unconditional model
                nn.init.normal_(params[name], std=0.02)
        # adaLN-Zero: every residual branch and the output start at zero (cross-attention too, as
        # PixArt-alpha).
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
            if block.text == "cross":
                nn.init.zeros_(block.cross_attn.proj.weight)
                nn.init.zeros_(block.cross_attn.proj.bias)
            elif block.text == "joint":
                nn.init.zeros_(block.text_adaLN_modulation[-1].weight)
                nn.init.zeros_(block.text_adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)
        if self._mup_shapes:
            widen_init_(self, self._mup_shapes, NORMAL_INIT)

    def learning_rate_scales(self) -> dict[str, float]:
        """muP's learning-rate multipliers (1 / m of the hidden weights); {} under the standard one."""
        return learning_rate_scales(self._mup_shapes)

    def fsdp_units(self) -> list[nn.Module]:
        """The blocks, sharded and checkpointed one at a time by :func:`lit_vdit.parallel.parallelize`."""
        return list(self.blocks)

    def embedding_parameters(self) -> int:
        """Parameters of lookup tables (position and class embeddings, the temporal gate, the null
        caption), excluded from non-embedding N."""
        tables = [p for p in (self.pos_embed, self.temporal_gate) if p is not None]
        if self.y_embedder is not None:
            tables.append(self.y_embedder.embedding_table.weight)
        null = self.caption_embedder.embedding_parameters() if self.caption_embedder is not None else 0
        return sum(p.numel() for p in tables) + null

    def token_grid(self, shape: torch.Size | tuple[int, ...]) -> tuple[int, int, int]:
        """The (T, H, W) token grid of a (B, C, T, H, W) batch, refusing shapes the model cannot take."""
        _, channels, *sizes = shape
        grid = tuple(size // p for size, p in zip(sizes, self.patch_size, strict=True))
        divisible = all(size % p == 0 and size >= p for size, p in zip(sizes, self.patch_size, strict=True))
        tokens = grid[0] * grid[1] * grid[2]
        if channels != self.in_channels or not divisible or tokens > self.max_tokens:
            raise ValueError(
                f"VideoDiT takes (C, T, H, W) clips with C={self.in_channels}, T, H and W divisible by its "
                f"patch {self.patch_size} and at most max_tokens={self.max_tokens} tokens "
                f"(T/pt * H/ph * W/pw); got {tuple(shape[1:])} ({tokens} tokens): resize or crop the clip "
                f"to such a shape, or build the model with a larger max_tokens"
            )
        return grid

    def position_table(self, grid: tuple[int, int, int], like: torch.Tensor) -> torch.Tensor:
        """(1, T*H*W, D) sin-cos positions of ``grid`` (the built grid's is ``pos_embed``, DiT's table)."""
        if grid == self.grid and self.temporal_gate is None:
            return self.pos_embed
        key = (grid, like.device, like.dtype)
        if key not in self._tables:  # a gated table keeps its spatial and temporal parts apart
            if self.temporal_gate is None:
                parts = (sincos_3d(self.hidden_size, grid), None)
            else:
                spatial = sincos_2d(self.hidden_size, grid[1], grid[2]).repeat(grid[0], 1)
                parts = (spatial, sincos_temporal(self.hidden_size, grid))
            self._tables[key] = tuple(None if p is None else p.float().to(like)[None] for p in parts)
        table, temporal = self._tables[key]
        return table if temporal is None else table + self.temporal_gate.to(like) * temporal

    def condition(
        self, t: torch.Tensor, y: torch.Tensor | None, text: TextEmbedding | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Each sample's (B, D) conditioning (timestep, class, pooled caption) and the caption tokens
        the blocks attend to, (B, L, D) with their (B, L) mask (None without cross / joint text)."""
        c = self.t_embedder(t)  # (B, D)
        if self.y_embedder is not None:
            if y is None:
                raise ValueError("this VideoDiT is class-conditional (num_classes > 0): pass labels y")
            c = c + self.y_embedder(y, self.training)
        if self.caption_embedder is None:
            return c, None, None
        if text is None:
            raise ValueError("this VideoDiT is text-conditional (text_dim set): pass the captions' text")
        context, context_mask = self.caption_embedder(text)  # (B, L, D), (B, L)
        if self.text_conditioning == "pooled":
            return c + masked_mean(context, context_mask), None, None
        return c, context, context_mask

    def forward_packed(
        self,
        clips: list[torch.Tensor],
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        text: TextEmbedding | None = None,
    ) -> list[torch.Tensor]:
        """K clips of any shapes (each (C, T, H, W)) as one sequence: the same outputs as K separate
        calls, with no padding. t: (K,), y: (K,) or None, text: K captions or None. Full attention
        and cross / pooled text only (interleaved and joint attention reshape per clip)."""
        if any(block.layout != "full" for block in self.blocks) or self.text_conditioning == "joint":
            raise ValueError(
                "packing attends within each clip over all its tokens: use attention='full' and text "
                "conditioning 'cross' or 'pooled' (or run the clips as batches of one shape)"
            )
        grids = [self.token_grid(clip[None].shape) for clip in clips]
        lengths = [math.prod(grid) for grid in grids]
        tokens = torch.cat([self.x_embedder(clip[None]) for clip in clips], dim=1)  # (1, N, D)
        if self.pos_embed is not None:
            tokens = tokens + torch.cat([self.position_table(g, tokens) for g in grids], dim=1)
        segment = torch.repeat_interleave(
            torch.arange(len(clips), device=tokens.device), torch.tensor(lengths, device=tokens.device)
        )  # (N,): the clip of each token
        pack = Pack(segment, lengths)
        rope = None
        if self.rope is not None:
            rotations = [self.rope.at(g, tokens.device) for g in grids]
            rope = Rotary(torch.cat([r.cos for r in rotations]), torch.cat([r.sin for r in rotations]))
        c, context, context_mask = self.condition(t, y, text)  # (K, D), (K, L, D), (K, L)
        if context is not None:  # every token attends to its own clip's caption tokens
            owner = torch.arange(len(clips), device=tokens.device).repeat_interleave(context.shape[1])
            context_mask = ((segment[:, None] == owner[None, :]) & context_mask.reshape(1, -1))[None]
            context = context.reshape(1, -1, context.shape[-1])  # (1, K*L, D)
        shard = self.sequence
        if shard is not None:  # this process's share of the pack's tokens; attention sees them all
            tokens, segment = shard.local(tokens), shard.local(segment[None])[0]
            context_mask = shard.local(context_mask) if context_mask is not None else None
            pack = Pack(segment, lengths)
        for block in self.blocks:
            tokens, _ = block(tokens, c, None, rope, context, context_mask, pack, shard)
        out = self.final_layer(tokens, c, segment)
        out = (shard.gather(out) if shard is not None else out)[0]  # (N, patch values)
        return [
            self.unpatchify(part[None], grid)[0] for part, grid in zip(out.split(lengths), grids, strict=True)
        ]

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        pt, ph, pw = self.patch_size
        t, h, w = grid
        return rearrange(
            x, "b (t h w) (pt ph pw c) -> b c (t pt) (h ph) (w pw)", t=t, h=h, w=w, pt=pt, ph=ph, pw=pw
        )

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        text: TextEmbedding | None = None,
    ) -> torch.Tensor:
        """x: (B, C, T, H, W) noisy latents of any shape :meth:`token_grid` allows, t: (B,) timesteps,
        y: (B,) class labels or None, text: the captions' (B, L, text_dim) tokens and mask, or None."""
        if isinstance(x, list):  # a pack of clips of several shapes: one sequence
            return self.forward_packed(x, t, y, text)
        grid = self.token_grid(x.shape)
        tokens = self.x_embedder(x)  # (B, N, D), N = T/pt * H/ph * W/pw
        if self.pos_embed is not None:
            tokens = tokens + self.position_table(grid, tokens)
        rope = self.rope.at(grid, x.device) if self.rope is not None else None
        c, context, context_mask = self.condition(t, y, text)  # (B, D), (B, L, D), (B, L)
        shard = self.sequence
        tokens = shard.local(tokens) if shard is not None else tokens  # sequence parallel: (B, N/P, D)
        for block in self.blocks:
            tokens, context = block(tokens, c, grid, rope, context, context_mask, shard=shard)
        out = self.final_layer(tokens, c)
        out = shard.gather(out) if shard is not None else out  # (B, N, patch values)
        return self.unpatchify(out, grid)  # (B, out_channels, T, H, W)

    def shard_sequence(self, group: dist.ProcessGroup) -> None:
        """Split every clip's tokens over ``group`` from now on (Ulysses sequence parallelism,
        :mod:`lit_vdit.models.sequence_parallel`): called by :func:`lit_vdit.parallel.parallelize`."""
        self.check_sequence_degree(dist.get_world_size(group))
        self.sequence = SequenceShard.of(group)

    def check_sequence_degree(self, degree: int) -> None:
        """Refuse a sequence-parallel degree the model cannot be split over, naming the fix."""
        if self.num_heads % degree:
            raise ValueError(
                f"sequence parallelism over {degree} processes splits the attention heads: num_heads "
                f"{self.num_heads} is not divisible by {degree}; choose heads (or a degree) that divide"
            )
        if self.text_conditioning == "joint":
            raise ValueError(
                "sequence parallelism with joint text attention is not supported (the caption tokens would "
                "join every process's share): use text_conditioning cross or pooled"
            )
