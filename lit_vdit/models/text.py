"""Text conditioning: encoded captions, the text-encoder interface, a small trainable encoder, and the
caption projection a denoiser conditions on.

A :class:`TextEncoder` turns captions into token embeddings (B, L, dim) with a padding mask. The
DiffusionModule encodes each batch's captions with it (or reads them from a caption cache) and hands
the denoiser a :class:`TextEmbedding`; the denoiser's :class:`CaptionEmbedder` projects the tokens to
its width and stands in its learned null caption where ``drop`` is set (caption dropout in training,
the unconditional half of classifier-free guidance). Frozen Hugging Face encoders (T5, UMT5, CLIP) are
in :mod:`lit_vdit.models.hf_text`; :class:`SmallTextEncoder` needs no weights and trains with the
denoiser (the embedded demo, CPU-scale studies).
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Sequence
from typing import Literal, Protocol, runtime_checkable

import torch
from torch import nn

from lit_vdit.models.fingerprint import module_fingerprint
from lit_vdit.models.layers import Attention, Mlp, sincos_1d


@dataclasses.dataclass
class TextEmbedding:
    """Captions encoded for a denoiser.

    Attributes:
        tokens: (B, L, D) encoder outputs.
        mask: (B, L) bool, True at caption tokens, False at padding (never attended to).
        drop: (B,) bool or None: samples whose caption the denoiser replaces by its null caption.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    drop: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or tuple(self.mask.shape) != tuple(self.tokens.shape[:2]):
            raise ValueError(
                f"text tokens must be (B, L, D) with a (B, L) mask, got {tuple(self.tokens.shape)} and "
                f"{tuple(self.mask.shape)}"
            )
        self.mask = self.mask.bool()

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def dropped(self) -> TextEmbedding:
        """The same batch with every caption replaced by the null caption."""
        drop = torch.ones(len(self), dtype=torch.bool, device=self.tokens.device)
        return TextEmbedding(self.tokens, self.mask, drop)

    def drops(self) -> torch.Tensor:
        """``drop`` as a (B,) bool tensor (all False when None)."""
        if self.drop is None:
            return torch.zeros(len(self), dtype=torch.bool, device=self.tokens.device)
        return self.drop.bool()

    @staticmethod
    def cat(parts: Sequence[TextEmbedding]) -> TextEmbedding:
        """Batches of the same caption length, one after the other."""
        return TextEmbedding(
            torch.cat([p.tokens for p in parts]),
            torch.cat([p.mask for p in parts]),
            torch.cat([p.drops() for p in parts]),
        )

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEmbedding:
        tokens = self.tokens.to(device, dtype) if dtype is not None else self.tokens.to(device)
        drop = self.drop.to(device) if self.drop is not None else None
        return TextEmbedding(tokens, self.mask.to(device), drop)


@runtime_checkable
class TextEncoder(Protocol):
    """Captions -> token embeddings: what the DiffusionModule and the caption cache use of an encoder.

    Attributes:
        dim: width D of the token embeddings.
        max_length: tokens per caption (longer captions are truncated, shorter padded).
        name: what a run records as its text encoder (class and model).
    """

    dim: int
    max_length: int
    name: str

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids (B, max_length) long, mask (B, max_length) bool), padded to ``max_length``."""

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """(B, L) ids and mask -> (B, L, dim) token embeddings; ``mask=None``: every token is real."""

    def fingerprint(self) -> str:
        """Hash of the weights, tokenizer and max length: equal encoders give equal embeddings."""


def encoder_name(encoder: TextEncoder | None) -> str:
    """The encoder's ``name``, "" without one (what ``runs.csv`` records)."""
    return encoder.name if encoder is not None else ""


def is_frozen(encoder: nn.Module) -> bool:
    """No trainable parameters: its embeddings of a caption never change (and can be cached)."""
    return not any(p.requires_grad for p in encoder.parameters())


def encode_captions(encoder: TextEncoder, captions: Sequence[str], device: torch.device) -> TextEmbedding:
    """Tokenize and encode ``captions`` on ``device`` (without autograd for a frozen encoder)."""
    ids, mask = encoder.tokenize(list(captions))
    ids, mask = ids.to(device), mask.to(device)
    with torch.set_grad_enabled(torch.is_grad_enabled() and not is_frozen(encoder)):
        return TextEmbedding(encoder(ids, mask), mask)


class _EncoderBlock(nn.Module):
    """Pre-norm transformer layer over caption tokens, padding masked as keys."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), mask=mask)
        return x + self.mlp(self.norm2(x))


class SmallTextEncoder(nn.Module):
    """A small text encoder that needs no weights and is trained with the denoiser.

    Tokens are UTF-8 bytes (``tokens="byte"``) or lower-cased words hashed into ``vocab_size`` ids
    (``"word"``: no vocabulary file, so nothing to download or ship); every caption starts with a
    start token, so no caption is empty. Fixed sin-cos positions, ``depth`` pre-norm transformer
    layers, a final LayerNorm; outputs at padding are zero.
    """

    PAD, START = 0, 1

    def __init__(
        self,
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 2,
        max_length: int = 32,
        tokens: Literal["word", "byte"] = "word",
        vocab_size: int = 4096,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if tokens not in ("word", "byte"):
            raise ValueError(f"tokens must be 'word' or 'byte', got {tokens!r}")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for the start token and a word, got {max_length}")
        self.dim, self.max_length, self.tokens = dim, max_length, tokens
        self.vocab_size = 256 + 2 if tokens == "byte" else vocab_size
        # Unit-variance token embeddings (nn.Embedding's own init), as large as the sin-cos positions
        # added to them: at GPT-2's std 0.02 every caption's tokens are nearly their positions alone.
        self.embed = nn.Embedding(self.vocab_size, dim)
        self.register_buffer("pos", sincos_1d(dim, torch.arange(max_length)).float(), persistent=False)
        self.blocks = nn.ModuleList(_EncoderBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    @property
    def name(self) -> str:
        return f"SmallTextEncoder({self.tokens}, dim {self.dim}, depth {len(self.blocks)})"

    def fsdp_units(self) -> list[nn.Module]:
        """The layers, sharded one at a time under FSDP2 (:func:`lit_vdit.parallel.parallelize`)."""
        return list(self.blocks)

    def token_ids(self, caption: str) -> list[int]:
        if self.tokens == "byte":
            ids = [b + 2 for b in caption.encode("utf-8")]
        else:
            words = re.findall(r"[a-z0-9]+|[^\sa-z0-9]", caption.lower())
            ids = [2 + zlib.crc32(w.encode()) % (self.vocab_size - 2) for w in words]
        return [self.START, *ids][: self.max_length]

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(captions), self.max_length), self.PAD, dtype=torch.long)
        for row, caption in enumerate(captions):
            tokens = self.token_ids(caption)
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids, ids != self.PAD

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(ids) + self.pos[: ids.shape[1]].to(self.embed.weight.dtype)  # (B, L, dim)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) if mask is None else self.norm(x) * mask.unsqueeze(-1)

    def fingerprint(self) -> str:
        settings = {"tokens": self.tokens, "vocab_size": self.vocab_size, "max_length": self.max_length}
        return module_fingerprint(self, settings)


class CaptionEmbedder(nn.Module):
    """Encoder tokens -> the denoiser's width (PixArt-alpha's caption MLP, Xavier-initialised as the
    denoiser's other linear layers: PixArt's std 0.02 suits 4096-wide T5 states, and shrinks a narrow
    encoder's tokens to almost nothing), and the null caption.

    The null caption is one learned token (the rest masked), which stands in for a caption where
    ``TextEmbedding.drop`` is set; it exists when the model is trained with caption dropout
    (``dropout_prob > 0``), drawn by the DiffusionModule per sample from its position in the run.
    """

    def __init__(self, text_dim: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.text_dim, self.dropout_prob = text_dim, dropout_prob
        self.proj = nn.Sequential(
            nn.Linear(text_dim, hidden_size), nn.GELU(approximate="tanh"), nn.Linear(hidden_size, hidden_size)
        )
        self.null_token = nn.Parameter(torch.randn(text_dim) / text_dim**0.5) if dropout_prob > 0 else None

    def forward(self, text: TextEmbedding) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, hidden) caption tokens and their (B, L) mask, null captions put in."""
        tokens, mask = text.tokens, text.mask
        if tokens.shape[-1] != self.text_dim:
            raise ValueError(
                f"the denoiser was built for {self.text_dim}-wide text embeddings, got {tokens.shape[-1]}: "
                f"use the text encoder it was trained with"
            )
        drop = text.drop
        if drop is not None and drop.any():
            if self.null_token is None:
                raise ValueError(
                    "captions were dropped (guidance or caption dropout) but the denoiser has no null "
                    "caption: train it with caption_dropout_prob > 0"
                )
            null = torch.zeros_like(tokens)
            null[:, 0] = self.null_token.to(tokens.dtype)
            null_mask = torch.zeros_like(mask)
            null_mask[:, 0] = True
            tokens = torch.where(drop[:, None, None], null, tokens)
            mask = torch.where(drop[:, None], null_mask, mask)
        return self.proj(tokens.to(self.proj[0].weight.dtype)), mask

    def embedding_parameters(self) -> int:
        return self.null_token.numel() if self.null_token is not None else 0


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D) tokens averaged over their (B, L) mask's True positions -> (B, D)."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1)
