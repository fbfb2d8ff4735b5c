"""The exponential moving average of a denoiser's weights, kept in float32 whatever the precision."""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from lit_vdit.models.text import TextEmbedding


class EMA(nn.Module):
    """A float32 copy of ``model`` updated as ``ema <- decay * ema + (1 - decay) * params``.

    The copy stays float32 under every training precision: Lightning's ``bf16-true`` / ``16-true``
    cast the whole LightningModule with ``module.to(dtype)``, and a bf16 EMA cannot move (an update
    of ``1 - decay = 1e-4`` of a weight is below bf16's resolution of ~4e-3), so its validation loss
    would stay frozen. The copy follows every device move, but no dtype cast (:meth:`_apply`).
    It also runs in float32 (:meth:`forward`), so its validation loss and samples are not rounded to
    the training precision. Under FSDP2 ``module`` is sharded like the model, and the update is a
    local operation on each process's shards.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).float().requires_grad_(False)

    @property
    def null_class(self) -> int | None:
        return self.module.null_class

    @property
    def null_caption(self) -> bool:
        return self.module.null_caption

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        text: TextEmbedding | None = None,
    ) -> torch.Tensor:
        if text is None:
            return self.module(x.float(), t, y)
        return self.module(x.float(), t, y, text.to(x.device, torch.float32))

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """One EMA step towards ``model``'s current weights (float32 arithmetic)."""
        ema = list(self.module.parameters())
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(ema, params, 1.0 - decay)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> EMA:
        def device_only(t: torch.Tensor) -> torch.Tensor:
            if not t.is_floating_point() or t.is_meta:
                return fn(t)
            # ``fn`` of an empty tensor on t's device tells where ``fn`` moves t; its dtype is ignored.
            return t.to(fn(torch.empty(0, dtype=t.dtype, device=t.device)).device)

        return super()._apply(device_only, recurse)
