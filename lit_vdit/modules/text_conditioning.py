"""The text side of a text-conditional DiffusionModule: its encoder, the encoder's average and costs,
and a batch's captions as the denoiser takes them."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lit_vdit.flops import text_encoder_costs
from lit_vdit.models.text import TextEmbedding, TextEncoder, encode_captions, encoder_name, is_frozen
from lit_vdit.modules.ema import EMA


class TextConditioning(nn.Module):
    """A text encoder as a DiffusionModule uses it.

    A frozen encoder is kept out of the state dict (its weights are the user's files, possibly
    gigabytes: checkpoints record its :attr:`fingerprint` instead) and follows the module's device
    when used. A trainable one is a submodule (``trained``), optimised with the denoiser, saved in
    its checkpoints and averaged (``ema``) when the module keeps an EMA.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        if not isinstance(encoder, TextEncoder):
            raise TypeError(
                f"{type(encoder).__name__} is not a lit_vdit.models.text.TextEncoder (dim, max_length, name, "
                f"tokenize, forward(ids, mask), fingerprint): use SmallTextEncoder or PretrainedTextEncoder"
            )
        self._frozen: tuple[nn.Module, ...] = (encoder.eval(),) if is_frozen(encoder) else ()
        self.trained: nn.Module | None = None if self._frozen else encoder
        self.ema: EMA | None = None
        self.captions_encoded = 0  # training captions encoded on the fly (not read from a caption cache)

    @property
    def encoder(self) -> TextEncoder:
        return self._frozen[0] if self._frozen else self.trained

    @property
    def fingerprint(self) -> str | None:
        """The frozen encoder's fingerprint (hashed when first asked: a large encoder's weights take a
        while); None for a trained encoder, whose weights the checkpoints hold."""
        return self._frozen[0].fingerprint() if self._frozen else None

    def costs(self) -> dict[str, int]:
        return text_encoder_costs(self.encoder)

    def keep_average(self) -> None:
        """Average a trained encoder's weights from now on (the module keeps an EMA)."""
        self.ema = EMA(self.trained) if self.trained is not None else None

    def update_average(self, decay: float) -> None:
        if self.ema is not None:
            self.ema.update(self.trained, decay)

    def trained_modules(self) -> list[nn.Module]:
        """What parallelism shards beside the denoiser: the trained encoder and its average."""
        if self.trained is None:
            return []
        return [self.trained] + ([self.ema.module] if self.ema is not None else [])

    def embed(self, batch: dict[str, Any], device: torch.device, averaged: bool = False) -> TextEmbedding:
        """The batch's captions as the denoiser takes them: read from a caption cache, else encoded
        now (by the trained encoder's average when ``averaged`` and one is kept)."""
        if "text_tokens" in batch:  # precomputed by `lit-vdit cache-captions`
            return TextEmbedding(batch["text_tokens"], batch["text_mask"])
        if "caption" not in batch:
            raise ValueError(
                "the model is text-conditional but the batches carry no captions: give the data a caption "
                "source (video folders: captions: manifest.csv or caption_template; the synthetic data "
                "always has them), or drop the model's text_encoder"
            )
        if self._frozen and next(self._frozen[0].parameters()).device != device:
            self._frozen[0].to(device)
        encoder = self.ema.module if averaged and self.ema is not None else self.encoder
        return encode_captions(encoder, batch["caption"], device)


def text_checkpoint_state(text: TextConditioning | None) -> dict[str, Any]:
    """What a checkpoint records of a module's text side: the frozen encoder's fingerprint (its weights
    are not saved) and the captions encoded so far (the encoder's share of the training FLOPs)."""
    if text is None:
        return {"text_fingerprint": None, "captions_encoded": 0}
    return {"text_fingerprint": text.fingerprint, "captions_encoded": text.captions_encoded}


def restore_text_state(text: TextConditioning | None, state: dict[str, Any]) -> None:
    """Resume the text side from a checkpoint's :func:`text_checkpoint_state`, refusing a checkpoint
    trained with another frozen encoder (or with one, or without, when this module differs)."""
    own = text.fingerprint if text is not None else None
    saved = state.get("text_fingerprint", own)
    if saved != own:
        name = encoder_name(text.encoder) if text is not None else "none"
        raise ValueError(
            f"this checkpoint was trained with another frozen text encoder (fingerprint {str(saved)[:16]}) "
            f"than the one configured ({name}, fingerprint {str(own)[:16]}): configure the text encoder "
            f"the run was trained with"
        )
    if text is not None:
        text.captions_encoded = int(state.get("captions_encoded", 0))
