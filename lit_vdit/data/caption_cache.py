"""Caption cache: every caption of a dataset encoded once by a frozen text encoder, memory-mapped.

    lit-vdit cache-captions --data configs/data/ucf101.yaml --text-encoder configs/text/t5.yaml \\
        --out captions/ucf101-t5 [--batch-size 64] [--device cuda]

The folder holds ``tokens.npy`` (U, L, D) and ``masks.npy`` (U, L) for the U distinct captions of the
train and val splits, ``keys.json`` (sha256 of a caption -> its row) and ``meta.json``: the encoder's
fingerprint (weights, tokenizer, max length), name, width and max length, and how many rows are
written (rewritten atomically after every chunk, so an interrupted build resumes). A DataModule
given ``caption_cache`` adds each clip's ``text_tokens`` and ``text_mask`` to its batches, looked up by
the caption's hash; the DiffusionModule then skips its encoder, after checking that the cache was
made by the same encoder (:meth:`CaptionCache.check`). Trainable encoders are refused: their
embeddings change as they train.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentParser
from torch import nn
from torch.utils.data import Dataset

from lit_vdit.io import atomic_write_json
from lit_vdit.models.text import TextEncoder, encode_captions, is_frozen

META = "meta.json"
FORMAT = 1


def caption_key(caption: str) -> str:
    return hashlib.sha256(caption.encode("utf-8")).hexdigest()


def encoder_setup(encoder: TextEncoder) -> dict[str, Any]:
    return {
        "fingerprint": encoder.fingerprint(),
        "name": encoder.name,
        "dim": int(encoder.dim),
        "max_length": int(encoder.max_length),
    }


def build_caption_cache(
    captions: list[str],
    encoder: TextEncoder,
    out: str | Path,
    batch_size: int = 64,
    device: str = "cpu",
    dtype: str = "float16",
) -> dict[str, Any]:
    """Encode the distinct ``captions`` into ``out``, resuming a partial build of the same setup."""
    if not is_frozen(encoder):
        raise ValueError(
            f"{encoder.name} has trainable parameters: its embeddings change as it trains, so they cannot "
            f"be cached; cache a frozen encoder's (PretrainedTextEncoder) or train without a caption cache"
        )
    out = Path(out)
    unique = sorted(set(captions), key=caption_key)
    setup = {"encoder": encoder_setup(encoder), "dtype": dtype, "captions": len(unique)}
    meta = {"format": FORMAT, "setup": setup, "written": 0}
    if (out / META).is_file():
        saved = json.loads((out / META).read_text())
        if saved.get("setup") != setup:
            raise ValueError(
                f"{out} holds a caption cache of another setup ({saved.get('setup', {}).get('encoder', {})} "
                f"with {saved.get('setup', {}).get('captions')} captions); write to another --out folder "
                f"or delete {out}"
            )
        meta = saved
    out.mkdir(parents=True, exist_ok=True)
    start, total, length = meta["written"], len(unique), encoder.max_length
    mode = "r+" if start else "w+"
    tokens = np.lib.format.open_memmap(
        out / "tokens.npy", mode, np.dtype(dtype), (total, length, encoder.dim)
    )
    masks = np.lib.format.open_memmap(out / "masks.npy", mode, np.bool_, (total, length))
    if not start:
        atomic_write_json(out / "keys.json", {caption_key(c): row for row, c in enumerate(unique)})
        atomic_write_json(out / META, meta)
    encoder = encoder.to(device)
    for begin in range(start, total, batch_size):
        chunk = unique[begin : begin + batch_size]
        with torch.no_grad():
            text = encode_captions(encoder, chunk, torch.device(device))
        tokens[begin : begin + len(chunk)] = text.tokens.float().cpu().numpy()
        masks[begin : begin + len(chunk)] = text.mask.cpu().numpy()
        tokens.flush()
        masks.flush()
        meta["written"] = begin + len(chunk)
        atomic_write_json(out / META, meta)
    return meta


class CaptionCache:
    """A caption cache folder, read memory-mapped: ``lookup(caption) -> (tokens (L, D), mask (L,))``."""

    def __init__(self, cache_dir: str | Path) -> None:
        self.cache_dir = Path(cache_dir)
        file = self.cache_dir / META
        if not file.is_file():
            raise FileNotFoundError(
                f"{cache_dir} is not a caption cache (no {META}); build one with "
                f"`lit-vdit cache-captions --data CONFIG --text-encoder CONFIG --out {cache_dir}`"
            )
        self.meta = json.loads(file.read_text())
        if self.meta["written"] < self.meta["setup"]["captions"]:
            raise ValueError(
                f"caption cache {cache_dir} is unfinished ({self.meta['written']}/"
                f"{self.meta['setup']['captions']} captions): run the same `lit-vdit cache-captions` again"
            )
        self.keys: dict[str, int] = json.loads((self.cache_dir / "keys.json").read_text())
        self.arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "arrays": None}  # DataLoader workers open their own maps

    def lookup(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        row = self.keys.get(caption_key(caption))
        if row is None:
            raise KeyError(
                f"caption {caption[:80]!r} is not in the caption cache {self.cache_dir}: the data's captions "
                f"changed since it was built; rebuild it with `lit-vdit cache-captions`"
            )
        if self.arrays is None:
            self.arrays = tuple(
                np.load(self.cache_dir / n, mmap_mode="r") for n in ("tokens.npy", "masks.npy")
            )
        tokens, masks = self.arrays
        return torch.from_numpy(tokens[row].astype(np.float32)), torch.from_numpy(masks[row].copy())

    def check(self, encoder: TextEncoder | None) -> None:
        """Refuse a model whose text encoder (or max length) is not the one that built the cache."""
        cached = self.meta["setup"]["encoder"]
        if encoder is None:
            raise ValueError(
                f"the data reads caption embeddings from {self.cache_dir} but the model has no text encoder: "
                f"configure the model's text_encoder ({cached['name']}) or drop the data's caption_cache"
            )
        own = encoder_setup(encoder)
        if own != cached:
            raise ValueError(
                f"caption cache {self.cache_dir} was made by {cached['name']} (max length "
                f"{cached['max_length']}, fingerprint {cached['fingerprint'][:16]}), but the model's text "
                f"encoder is {own['name']} (max length {own['max_length']}, fingerprint "
                f"{own['fingerprint'][:16]}): configure that encoder, or rebuild the cache with this one"
            )


class CaptionedDataset(Dataset):
    """``dataset``'s items with their caption's cached ``text_tokens`` and ``text_mask`` added."""

    def __init__(self, dataset: Dataset, cache: CaptionCache) -> None:
        self.dataset, self.cache = dataset, cache

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        if "caption" not in item:
            raise ValueError("the data has a caption_cache but its clips have no captions to look up")
        tokens, mask = self.cache.lookup(item["caption"])
        return {**item, "text_tokens": tokens, "text_mask": mask}


def main(argv: list[str]) -> int:
    """``lit-vdit cache-captions``: see the module docstring."""
    from lit_vdit.data.datamodule import VideoDataModule

    parser = ArgumentParser(prog="lit-vdit cache-captions", description=__doc__.split("\n\n")[0])
    parser.add_subclass_arguments(VideoDataModule, "data", required=True, help="data config (YAML or class)")
    parser.add_subclass_arguments(nn.Module, "text_encoder", required=True, help="text encoder config")
    parser.add_argument("--out", required=True, help="cache folder (created, or resumed)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    cfg = parser.parse_args(argv)
    parts = parser.instantiate_classes(cfg)
    datamodule = parts.data
    datamodule.prepare_data()
    datamodule.setup("fit")
    captions = [c for split in ("train", "val") for c in datamodule.split_captions(split) or []]
    if not captions:
        raise SystemExit("lit-vdit cache-captions: the data has no captions (give it a caption manifest)")
    meta = build_caption_cache(captions, parts.text_encoder, cfg.out, cfg.batch_size, cfg.device, cfg.dtype)
    print(f"caption cache {cfg.out}: {meta['written']} distinct captions of {len(captions)} clips")
    return 0
