"""Frozen pretrained text encoders (T5 / UMT5 / mT5 encoders, the CLIP text model) from a local folder.

The folder is one written by ``save_pretrained`` (``config.json``, the weights, the tokenizer files),
read with ``transformers`` with ``local_files_only``: nothing is downloaded. Open-Sora and PixArt use
T5 (v1.1 XXL) encoder states, CogVideoX T5 too, Stable Diffusion CLIP's; any of them works here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from lit_vdit.models.fingerprint import module_fingerprint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_LENGTH_CAP = 512  # T5 tokenizers report model_max_length 512; others a huge sentinel


def _model_classes() -> dict[str, type[nn.Module]]:
    # transformers is imported here, not at module import: it takes seconds, and only runs that
    # use a pretrained encoder need it.
    from transformers import CLIPTextModel, MT5EncoderModel, T5EncoderModel, UMT5EncoderModel

    return {
        "t5": T5EncoderModel,
        "umt5": UMT5EncoderModel,
        "mt5": MT5EncoderModel,
        "clip": CLIPTextModel,
        "clip_text_model": CLIPTextModel,
    }


class PretrainedTextEncoder(nn.Module):
    """A frozen Hugging Face text encoder and its tokenizer, read from ``path``.

    Args:
        path: folder written by ``save_pretrained`` (the model and its tokenizer).
        max_length: tokens per caption, padded or truncated to it (default the tokenizer's
            ``model_max_length``, at most 512; Open-Sora uses 300 T5 tokens, CogVideoX 226, CLIP 77).
        dtype: "float32", "bfloat16" or "float16" weights.
    """

    def __init__(self, path: str, max_length: int | None = None, dtype: str = "float32") -> None:
        super().__init__()
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"no text encoder at {path} (no config.json): give a folder written by save_pretrained "
                f"with the model's config, weights and tokenizer files; lit_vdit never downloads weights"
            )
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        from transformers import AutoConfig, AutoTokenizer
        from transformers.utils import logging as hf_logging

        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        classes = _model_classes()
        if config.model_type not in classes:
            raise ValueError(
                f"{path} holds a {config.model_type!r} model; PretrainedTextEncoder reads {sorted(classes)} "
                f"(T5 / UMT5 / mT5 encoders, the CLIP text model)"
            )
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar in every run's log otherwise
        try:
            self.model = classes[config.model_type].from_pretrained(
                folder, local_files_only=True, dtype=DTYPES[dtype]
            )
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except OSError as error:
            raise FileNotFoundError(
                f"cannot read the text encoder at {path}: {error}. The folder needs the weights "
                f"(model.safetensors or pytorch_model.bin) and the tokenizer files (tokenizer.json or the "
                f"model's vocabulary), as save_pretrained writes them"
            ) from error
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        self.model.eval().requires_grad_(False)
        self.model_type, self.path = config.model_type, str(folder)
        if config.model_type.startswith("clip"):  # a whole CLIP model's config holds its text half
            self.dim = int((config.text_config if config.model_type == "clip" else config).hidden_size)
        else:
            self.dim = int(config.d_model)
        self.max_length = int(max_length or min(self.tokenizer.model_max_length, MAX_LENGTH_CAP))

    @property
    def name(self) -> str:
        return f"PretrainedTextEncoder:{self.model_type}:{Path(self.path).name}"

    def tokenize(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer(
            list(captions),
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        return out["input_ids"], out["attention_mask"].bool()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:  # every token real (how FLOPs are counted on the meta device)
            return self.model(input_ids=ids).last_hidden_state
        states = self.model(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, dim)
        return states * mask.unsqueeze(-1).to(states.dtype)

    @cached_property
    def _fingerprint(self) -> str:
        vocabulary = json.dumps(self.tokenizer.get_vocab(), sort_keys=True).encode()
        settings = {
            "model_type": self.model_type,
            "max_length": self.max_length,
            "tokenizer": hashlib.sha256(vocabulary).hexdigest(),
        }
        return module_fingerprint(self.model, settings)

    def fingerprint(self) -> str:
        return self._fingerprint
