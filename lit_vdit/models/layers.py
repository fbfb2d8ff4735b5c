"""Building blocks shared by the video denoisers: embedders, attention, position encodings, adaLN."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lit_vdit.models.sequence_parallel import SequenceShard


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: ``x * (1 + scale) + shift``, shift and scale (B, 1, D) per sample or (1, N, D)
    per token (:func:`spread`)."""
    return x * (1 + scale) + shift


def spread(m: torch.Tensor, segment: torch.Tensor | None = None) -> torch.Tensor:
    """A per-sample (B, D) modulation over each sample's tokens, (B, 1, D); for a pack of clips in one
    sequence (``segment``: each token's clip), the clips' (K, D) rows per token, (1, N, D)."""
    return m.unsqueeze(1) if segment is None else m[segment].unsqueeze(0)


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of a (possibly fractional) timestep followed by a two-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    @staticmethod
    def timestep_features(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t.float()[:, None] * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = self.timestep_features(t, self.frequency_embedding_size)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding with an extra "null" row used for label dropout (classifier-free guidance).

    In training, labels are replaced by the null class with probability ``dropout_prob``, drawn here
    unless ``random_drop`` is False: then the caller drops them itself (the DiffusionModule draws the
    mask per sample from the sample's position in the run, so it is the same on any number of processes).
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.random_drop = True
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    @property
    def null_class(self) -> int | None:
        """Label meaning "no class" for classifier-free guidance; None when trained without label dropout."""
        return self.num_classes if self.dropout_prob > 0 else None

    def forward(self, labels: torch.Tensor, train: bool) -> torch.Tensor:
        if train and self.dropout_prob > 0 and self.random_drop:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            labels = torch.where(drop, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """Fixed sin-cos embedding (len(positions), dim) as in "Attention is all you need"."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding dimension must be even, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    out = positions.double().reshape(-1)[:, None] * omega[None]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """DiT / MAE's 2D sin-cos table (height*width, dim), tokens row-major: the first half of the
    channels encodes the column (w), the second half the row (h), as ``get_2d_sincos_pos_embed``."""
    if dim % 4:
        raise ValueError(f"hidden size {dim} cannot be split into 2D sin-cos parts; use a multiple of 4")
    rows, columns = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, columns), sincos_1d(dim // 2, rows)], dim=1)


def sincos_temporal(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """The temporal part of :func:`sincos_3d`: each token's frame's sin-cos row taken relative to frame 0
    (zero in the first frame), (T*H*W, dim) in float64."""
    t, h, w = grid
    frames = torch.arange(t)
    temporal = sincos_1d(dim, frames) - sincos_1d(dim, torch.zeros_like(frames))  # (T, dim), 0 at t=0
    return temporal.repeat_interleave(h * w, dim=0)


def sincos_3d(dim: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """3D sin-cos position embedding for a (T, H, W) token grid, shape (T*H*W, dim), row-major.

    Every frame carries DiT's 2D table (:func:`sincos_2d`) over all ``dim`` channels, plus a
    temporal sin-cos table over the same channels (added, as Latte adds its temporal embedding)
    taken relative to frame 0, so that it is zero there: an image (T=1), and the first frame of any
    clip, get exactly DiT's table, and an image-trained DiT transfers to video.
    """
    t, h, w = grid
    spatial = sincos_2d(dim, h, w).repeat(t, 1)  # (T*H*W, dim)
    return (sincos_temporal(dim, grid) + spatial).float()


class Rotary:
    """RoPE angles of one token grid: rotates (B, heads, L, head_dim) queries or keys."""

    def __init__(self, cos: torch.Tensor, sin: torch.Tensor) -> None:
        self.cos, self.sin = cos, sin  # (T*H*W, head_dim / 2)

    def __call__(self, x: torch.Tensor, tokens: slice = slice(None)) -> torch.Tensor:
        """``tokens`` selects the grid positions of ``x``'s tokens: full attention uses every position;
        spatial attention the first frame (``slice(0, H*W)``) and temporal attention one column
        (``slice(0, None, H*W)``): only relative positions matter."""
        x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        cos, sin = self.cos[tokens], self.sin[tokens]
        rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
        return rotated.flatten(-2).type_as(x)


class RotaryEmbedding3D:
    """3D rotary position embedding: the head dimension is split into time, height and width parts.

    Holds no weights: the angles of each token grid are computed when first asked for (:meth:`at`)
    and kept, so one model takes clips of any shape.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0) -> None:
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
        pairs = head_dim // 2
        pairs_t = pairs // 4
        pairs_h = (pairs - pairs_t) // 2
        self.pairs = (pairs_t, pairs_h, pairs - pairs_t - pairs_h)
        self.theta = theta
        self._grids: dict[tuple[tuple[int, int, int], torch.device], Rotary] = {}

    def at(self, grid: tuple[int, int, int], device: torch.device | str = "cpu") -> Rotary:
        """The rotation of a (T, H, W) token grid, on ``device``."""
        key = (tuple(grid), torch.device(device))
        if key not in self._grids:
            axes = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in grid), indexing="ij")
            angles = []
            for axis, n_pairs in zip(axes, self.pairs, strict=True):
                freqs = 1.0 / self.theta ** (torch.arange(n_pairs, dtype=torch.float64) / max(n_pairs, 1))
                angles.append(axis.reshape(-1, 1) * freqs[None])
            angle = torch.cat(angles, dim=1)  # (L, head_dim / 2)
            self._grids[key] = Rotary(angle.cos().float().to(device), angle.sin().float().to(device))
        return self._grids[key]


def key_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """(B, L) bool key mask (True = attend), or (B, N, L) per query (a pack's block-diagonal mask) ->
    SDPA's boolean ``attn_mask``, (B, 1, 1, L) or (B, 1, N, L)."""
    if mask is None:
        return None
    return mask[:, None, None, :] if mask.dim() == 2 else mask[:, None]


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` with optional QK-norm.

    ``mask`` (B, L) marks the tokens that may be attended to (False at caption padding); with
    ``rope``, only the first ``rope_len`` tokens (the video's, in joint text-video attention) rotate.
    ``scale`` multiplies the scores (None: 1 / sqrt(head_dim); muP's is :mod:`lit_vdit.models.mup`'s).
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, scale: float | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"hidden size {dim} is not divisible by num_heads {num_heads}; pick heads that divide it"
            )
        self.num_heads, self.head_dim, self.scale = num_heads, dim // num_heads, scale
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        rope: Rotary | None = None,
        rope_tokens: slice = slice(None),
        mask: torch.Tensor | None = None,
        rope_len: int | None = None,
        lengths: list[int] | None = None,
        shard: SequenceShard | None = None,
        layout: tuple[str, int] = ("full", 1),
    ) -> torch.Tensor:
        """``lengths``: the tokens are a pack of clips of these lengths, each attending within itself
        (block-diagonal attention, run clip by clip with the fused kernel: no masked-out scores).
        ``shard``: ``x`` is this process's share of the tokens (sequence parallelism); they are traded
        for a share of the heads around the attention, arranged in ``layout`` ("full", "spatial" or
        "temporal", and the clip's frames), which the caller arranges itself otherwise."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        if shard is not None:  # (B, H, N/P, d) -> (B, H/P, N, d), then the layout's attention batches
            q, k, v = (_to_layout(shard.heads_for_tokens(t), layout) for t in (q, k, v))
        if rope is not None and rope_len is None:
            q, k = rope(q, rope_tokens), rope(k, rope_tokens)
        elif rope is not None:
            q = torch.cat([rope(q[:, :, :rope_len], rope_tokens), q[:, :, rope_len:]], dim=2)
            k = torch.cat([rope(k[:, :, :rope_len], rope_tokens), k[:, :, rope_len:]], dim=2)
        if lengths is None:
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask(mask), scale=self.scale)
        else:
            parts = zip(q.split(lengths, 2), k.split(lengths, 2), v.split(lengths, 2), strict=True)
            x = torch.cat([F.scaled_dot_product_attention(*part, scale=self.scale) for part in parts], dim=2)
        if shard is not None:
            x = shard.tokens_for_heads(_from_layout(x, layout, b))
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


def _to_layout(x: torch.Tensor, layout: tuple[str, int]) -> torch.Tensor:
    """(B, H, T*S, d) -> the attention batches of ``layout``: within frames (B*T, H, S, d), across time
    (B*S, H, T, d), or all tokens."""
    kind, frames = layout
    if kind == "spatial":
        return rearrange(x, "b h (t s) d -> (b t) h s d", t=frames)
    if kind == "temporal":
        return rearrange(x, "b h (t s) d -> (b s) h t d", t=frames)
    return x


def _from_layout(x: torch.Tensor, layout: tuple[str, int], batch: int) -> torch.Tensor:
    kind, _ = layout
    if kind == "spatial":
        return rearrange(x, "(b t) h s d -> b h (t s) d", b=batch)
    if kind == "temporal":
        return rearrange(x, "(b s) h t d -> b h (t s) d", b=batch)
    return x


class CrossAttention(nn.Module):
    """Multi-head attention of (B, N, dim) tokens to a (B, L, context_dim) context (caption tokens),
    keys masked at padding (PixArt-alpha / Open-Sora's cross-attention); ``scale`` as :class:`Attention`'s."""

    def __init__(
        self, dim: int, context_dim: int, num_heads: int, qk_norm: bool = False, scale: float | None = None
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(
                f"hidden size {dim} is not divisible by num_heads {num_heads}; pick heads that divide it"
            )
        self.num_heads, self.head_dim, self.scale = num_heads, dim // num_heads, scale
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q = self.q_norm(self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2))
        k, v = self.kv(context).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, self.k_norm(k), v, attn_mask=key_mask(mask), scale=self.scale)
        return self.proj(x.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """Transformer feed-forward: Linear -> GELU(tanh) -> Linear."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
