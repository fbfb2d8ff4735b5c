"""Ulysses sequence parallelism (DeepSpeed-Ulysses, Open-Sora) for the video DiT's tokens.

The P processes of a sequence-parallel group hold the same clips and each computes 1/P of their
tokens: everything but attention acts token by token. Around attention one all-to-all trades the
token split for a head split, (B, H, N/P, d) -> (B, H/P, N, d), so each process attends over the whole
sequence (in any layout: full, within frames, across time) for H/P heads, and another trades it back.
The output tokens are gathered at the end; every process then computes the same loss. Its backward
gives each process the gradient of its own tokens only, times P: the data-parallel mean over all
processes (FSDP2's reduce-scatter over the flattened data x sequence mesh) then sums the processes'
token shares, as one process holding every token would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from einops import rearrange
from torch.distributed import _functional_collectives as funcol


@dataclass(frozen=True)
class SequenceShard:
    """A sequence-parallel group and this process's place in it."""

    group: dist.ProcessGroup
    size: int
    rank: int

    @classmethod
    def of(cls, group: dist.ProcessGroup) -> SequenceShard:
        return cls(group, dist.get_world_size(group), dist.get_rank(group))

    def local(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, ...) -> this process's (B, N/P, ...) share of the tokens."""
        n = tokens.shape[1]
        if n % self.size:
            raise ValueError(
                f"sequence parallelism over {self.size} processes splits the tokens evenly, but a clip has "
                f"{n} tokens: choose a clip shape (or patch size) whose token count {self.size} divides"
            )
        return tokens.chunk(self.size, dim=1)[self.rank]

    def heads_for_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, N/P, d) local tokens of every head -> (B, H/P, N, d) every token of this process's heads."""
        sent = rearrange(x, "b (p h) n d -> p b h n d", p=self.size).contiguous()
        received = funcol.all_to_all_single_autograd(sent, None, None, self.group)
        return rearrange(received, "p b h n d -> b h (p n) d")

    def tokens_for_heads(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`heads_for_tokens`."""
        sent = rearrange(x, "b h (p n) d -> p b h n d", p=self.size).contiguous()
        received = funcol.all_to_all_single_autograd(sent, None, None, self.group)
        return rearrange(received, "p b h n d -> b (p h) n d")

    def gather(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N/P, ...) -> (B, N, ...) on every process; backward keeps this process's share x P."""
        return _GatherTokens.apply(tokens, self)


class _GatherTokens(torch.autograd.Function):
    """All-gather along the tokens whose consumers are replicated: every process computes the same
    loss from the gathered tokens, so each takes its own share of the (identical) gradient, x P (see
    the module docstring), with no communication in backward."""

    @staticmethod
    def forward(ctx: Any, tokens: torch.Tensor, shard: SequenceShard) -> torch.Tensor:
        ctx.shard = shard
        parts = [torch.empty_like(tokens) for _ in range(shard.size)]
        dist.all_gather(parts, tokens.contiguous(), group=shard.group)
        return torch.cat(parts, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        shard = ctx.shard
        return grad.chunk(shard.size, dim=1)[shard.rank] * shard.size, None
