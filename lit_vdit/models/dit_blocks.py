"""The video DiT's parts: 3D patch embedding, the adaLN-Zero block (full, spatial or temporal attention;
cross or joint text), the final layer, and packs of clips (:mod:`lit_vdit.models.dit` builds the model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange
from torch import nn

from lit_vdit.models.layers import Attention, CrossAttention, Mlp, Rotary, modulate, spread
from lit_vdit.models.sequence_parallel import SequenceShard


class PatchEmbed3D(nn.Module):
    """(B, C, T, H, W) -> (B, L, D) tokens with a strided Conv3d, L = (T/pt)(H/ph)(W/pw)."""

    def __init__(self, patch_size: tuple[int, int, int], in_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


@dataclass
class Pack:
    """Several clips' tokens in one sequence (NaViT packing, :meth:`VideoDiT.forward_packed`):
    ``segment`` (N,) is each token's clip, ``lengths`` the clips' token counts.

    Self-attention is block-diagonal: SDPA runs clip by clip on the pack's slices (the way
    flash-attention's variable-length kernel does), exact and with the fused kernel on every device.
    A block-diagonal boolean mask over the whole pack would compute every masked-out score too, and
    forces SDPA's unfused path: on CPU it reached 0.25 of the buckets' training tokens/s, clip by clip
    0.69 (benchmarks/bench_packing.py); ``flex_attention`` skips masked blocks but is fast only compiled.
    """

    segment: torch.Tensor
    lengths: list[int]


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block attending over all tokens, within frames or across time.

    ``text="cross"`` adds cross-attention from the video tokens to the caption tokens after the
    self-attention; ``text="joint"`` attends over video and caption tokens together, the caption
    tokens with their own adaLN modulation (shared attention and MLP weights, as CogVideoX), and
    returns the updated caption tokens for the next block.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        mlp_ratio: float,
        qk_norm: bool,
        layout: Literal["full", "spatial", "temporal"],
        text: Literal["cross", "joint"] | None = None,
        attention_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.layout, self.text = layout, text
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qk_norm=qk_norm, scale=attention_scale)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        if text == "cross":
            self.cross_attn = CrossAttention(hidden_size, hidden_size, num_heads, qk_norm, attention_scale)
        elif text == "joint":
            self.text_adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def attend(
        self, x: torch.Tensor, grid: tuple[int, int, int], rope: Rotary | None, shard: SequenceShard | None
    ) -> torch.Tensor:
        t, h, w = grid
        if shard is not None:  # this process's tokens: the attention arranges the whole sequence
            positions = {"full": slice(None), "spatial": slice(0, h * w), "temporal": slice(0, None, h * w)}
            return self.attn(x, rope, positions[self.layout], shard=shard, layout=(self.layout, t))
        if self.layout == "full":
            return self.attn(x, rope)
        if self.layout == "spatial":
            out = self.attn(rearrange(x, "b (t s) d -> (b t) s d", t=t), rope, slice(0, h * w))
            return rearrange(out, "(b t) s d -> b (t s) d", t=t)
        out = self.attn(rearrange(x, "b (t s) d -> (b s) t d", t=t), rope, slice(0, None, h * w))
        return rearrange(out, "(b s) t d -> b (t s) d", s=h * w)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        grid: tuple[int, int, int],
        rope: Rotary | None,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        pack: Pack | None = None,
        shard: SequenceShard | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, N, D) video tokens, (B, D) conditioning, caption tokens (B, L, D) and mask (B, L) ->
        the updated video tokens and caption tokens. A ``pack`` is one sequence of several clips
        (B = 1): each token modulated by its clip's conditioning, attending within its clip. With a
        ``shard`` the tokens are this process's share (sequence parallelism)."""
        if self.text == "joint":
            return self.joint(x, c, rope, text, text_mask)
        segment = pack.segment if pack is not None else None
        mods = [spread(m, segment) for m in self.adaLN_modulation(c).chunk(6, dim=1)]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
        h = modulate(self.norm1(x), shift_msa, scale_msa)
        attended = (
            self.attn(h, rope, lengths=pack.lengths, shard=shard)
            if pack is not None
            else self.attend(h, grid, rope, shard)
        )
        x = x + gate_msa * attended
        if self.text == "cross":
            x = x + self.cross_attn(x, text, text_mask)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)), text

    def joint(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        rope: Rotary | None,
        text: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One attention over [video tokens, caption tokens]; padding masked as keys, RoPE on video only."""
        n = x.shape[1]
        video_mod = [spread(m) for m in self.adaLN_modulation(c).chunk(6, dim=1)]
        text_mod = [spread(m) for m in self.text_adaLN_modulation(c).chunk(6, dim=1)]
        joint = torch.cat(
            [modulate(self.norm1(x), *video_mod[:2]), modulate(self.norm1(text), *text_mod[:2])], dim=1
        )  # (B, N + L, D)
        keys = torch.cat([torch.ones_like(text_mask[:, :1]).expand(-1, n), text_mask], dim=1)
        out = self.attn(joint, rope, mask=keys, rope_len=n)
        x = x + video_mod[2] * out[:, :n]
        text = text + text_mod[2] * out[:, n:]
        x = x + video_mod[5] * self.mlp(modulate(self.norm2(x), *video_mod[3:5]))
        text = text + text_mod[5] * self.mlp(modulate(self.norm2(text), *text_mod[3:5]))
        return x, text


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from tokens back to patch values, times
    ``output_multiplier`` (muP's 1 / m; None: 1)."""

    def __init__(
        self, hidden_size: int, patch_volume: int, out_channels: int, output_multiplier: float | None = None
    ) -> None:
        super().__init__()
        self.output_multiplier = output_multiplier
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_volume * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, segment: torch.Tensor | None = None) -> torch.Tensor:
        shift, scale = (spread(m, segment) for m in self.adaLN_modulation(c).chunk(2, dim=1))
        out = self.linear(modulate(self.norm_final(x), shift, scale))
        return out if self.output_multiplier is None else out * self.output_multiplier
