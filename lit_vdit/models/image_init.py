"""Initialise a video DiT from a facebookresearch/DiT image checkpoint (as Latte and Open-Sora start
from PixArt / DiT weights).

What is copied and how (:func:`inflate_image_dit`):
- every weight of the image model that the video model has with the same shape (timestep and
  class embedders, attention, MLP and adaLN of each block, the final layer's adaLN);
- the patch embedding, inflated over time: each of the ``pt`` temporal taps gets the image kernel
  divided by ``pt`` (I3D's mean inflation), so a clip of identical frames embeds as its frame does;
- the final linear layer, repeated for each of the ``pt`` frames a token decodes to;
- with interleaved attention, the image blocks become the spatial blocks in order; the temporal
  blocks keep their adaLN-Zero initialisation (each starts as the identity).
Not copied: DiT's fixed sin-cos table (recomputed for every grid), and its class embedding when the
video model is text-conditional (as PixArt-alpha drops it). Everything the image model lacks
(temporal blocks, the temporal position gate, cross-attention, caption embedder) keeps its own
initialisation, zero on every residual branch. A class-conditional video DiT (the image model's
classes) with its temporal gate at zero then returns, frame by frame, what the image model returns on
each frame of a static clip, and exactly its output on an image (T=1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn


def read_image_dit(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of a facebookresearch/DiT checkpoint: a bare state dict (the released
    ``DiT-XL-2-256x256.pt``) or a training checkpoint's ``ema`` (else ``model``) entry."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"init_checkpoint {str(path)!r} does not exist: give the local path of a facebookresearch/DiT "
            f"checkpoint (.pt), e.g. DiT-XL-2-256x256.pt"
        )
    state: Any = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("ema", state.get("model")), dict):
        state = state.get("ema", state.get("model"))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"init_checkpoint {str(path)!r} is not a state dict of tensors (nor a DiT training checkpoint "
            f"with 'ema' / 'model' entries)"
        )
    return state


def image_block_names(model: nn.Module) -> dict[str, str]:
    """Video block prefix -> the image block it starts from: block i for full attention; the k-th
    spatial block from image block k for interleaved attention (temporal blocks start fresh)."""
    spatial = [i for i, block in enumerate(model.blocks) if block.layout in ("full", "spatial")]
    return {f"blocks.{i}.": f"blocks.{k}." for k, i in enumerate(spatial)}


# Parts of the video DiT that an image DiT does not have: they keep their own initialisation.
VIDEO_ONLY = ("temporal_gate", "caption_embedder.", ".cross_attn.", ".text_adaLN_modulation.", "_norm.")


def image_source(name: str, blocks: dict[str, str]) -> str | None:
    """The image checkpoint key a video DiT weight starts from; None for a video-only weight."""
    if any(part in name for part in VIDEO_ONLY):
        return None
    if name.startswith("blocks."):
        prefix = name[: name.index(".", len("blocks.")) + 1]
        return blocks[prefix] + name[len(prefix) :] if prefix in blocks else None  # None: a temporal block
    return name


def inflated(name: str, image: torch.Tensor, target: torch.Tensor, frames: int) -> torch.Tensor | None:
    """The image weight ``image`` made into the video model's ``target`` shape, or None if it cannot be."""
    if name == "x_embedder.proj.weight" and image.dim() == 4:  # (D, C, ph, pw) -> (D, C, pt, ph, pw)
        candidate = image[:, :, None].expand(-1, -1, frames, -1, -1) / frames
    elif name.startswith("final_layer.linear.") and frames > 1:  # rows (ph pw c) -> (pt ph pw c)
        candidate = image.repeat(frames, *([1] * (image.dim() - 1)))
    else:
        candidate = image
    return candidate if candidate.shape == target.shape else None


def inflate_image_dit(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a facebookresearch/DiT image checkpoint into the video DiT ``model`` (see the module doc).

    Returns the video model's keys by origin: ``copied`` (shape unchanged), ``inflated`` (over time)
    and ``new`` (own initialisation). A checkpoint that is not a DiT of this width, depth, patch and
    output channels fails with one error listing every mismatched key.
    """
    image = read_image_dit(path)
    frames = model.patch_size[0]
    blocks = image_block_names(model)
    ignored = {"pos_embed"} | ({"y_embedder.embedding_table.weight"} if model.y_embedder is None else set())
    loaded: dict[str, torch.Tensor] = {}
    origin: dict[str, list[str]] = {"copied": [], "inflated": [], "new": []}
    problems, used = [], set(ignored)
    for name, target in model.state_dict().items():
        source = image_source(name, blocks)
        if source is None or name in ignored:
            origin["new"].append(name)
            continue
        if source not in image:
            problems.append(f"{source}: in the model, not in the checkpoint")
            continue
        used.add(source)
        weight = inflated(name, image[source], target, frames)
        if weight is None:
            problems.append(f"{source}: checkpoint {tuple(image[source].shape)}, model {tuple(target.shape)}")
            continue
        loaded[name] = weight.to(target.dtype)
        origin["inflated" if weight.shape != image[source].shape else "copied"].append(name)
    problems += [f"{key}: in the checkpoint, not in the model" for key in sorted(set(image) - used)]
    if problems:
        raise ValueError(
            f"init_checkpoint {str(path)!r} does not fit this VideoDiT (hidden size {model.hidden_size}, "
            f"{len(blocks)} image blocks, patch {model.patch_size}, {model.out_channels} output channels); "
            f"mismatched keys:\n  " + "\n  ".join(problems) + "\nbuild the video DiT with the image "
            "model's preset, patch size, learn_sigma and num_classes (interleaved attention: twice its "
            "depth)"
        )
    model.load_state_dict(loaded, strict=False)
    return origin
