"""The interface of a denoiser: what the objectives, samplers, FLOP counter, parallelism and the
DiffusionModule use of a model (VideoDiT, VideoUNet, or one of your own)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from lit_vdit.models.text import TextEmbedding


@runtime_checkable
class Denoiser(Protocol):
    """``forward(x, t, y, text) -> prediction`` on (B, C, T, H, W) latents, with what the framework reads.

    A text-conditional denoiser is built with ``text_dim`` (the text encoder's width) among its
    arguments and takes the captions as a :class:`~lit_vdit.models.text.TextEmbedding`.

    Attributes:
        learn_sigma: the output also holds the variance interpolation (twice the input channels).
        num_tokens: latent positions per sample (the D of the scaling laws counts these).
    """

    learn_sigma: bool
    num_tokens: int

    @property
    def null_class(self) -> int | None:
        """The label meaning "no class" (classifier-free guidance); None without label dropout."""

    @property
    def null_caption(self) -> bool:
        """Trained with caption dropout: ``TextEmbedding.drop`` selects its null caption (guidance)."""

    @property
    def conditioning(self) -> str:
        """What it is conditioned on, recorded with every run: "class", "none" or "text-<mechanism>"."""

    def __call__(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        y: torch.Tensor | None = None,
        text: TextEmbedding | None = None,
    ) -> torch.Tensor: ...

    def fsdp_units(self) -> list[nn.Module]:
        """Submodules sharded and activation-checkpointed one at a time (DiT blocks, U-Net stages)."""

    def embedding_parameters(self) -> int:
        """Parameters of lookup tables (position and class embeddings), excluded from non-embedding N."""


DENOISER_MEMBERS = (
    "learn_sigma",
    "num_tokens",
    "null_class",
    "null_caption",
    "conditioning",
    "fsdp_units",
    "embedding_parameters",
)


def check_denoiser(model: nn.Module) -> None:
    """Raise naming what ``model`` lacks of the :class:`Denoiser` interface."""
    if not isinstance(model, Denoiser):
        missing = [name for name in DENOISER_MEMBERS if name not in dir(model)]
        raise TypeError(
            f"{type(model).__name__} does not implement lit_vdit.models.Denoiser (missing {missing}): "
            f"give it {', '.join(DENOISER_MEMBERS)} as VideoDiT does"
        )
