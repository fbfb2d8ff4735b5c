"""Latent cache: every clip of a dataset encoded once by a frozen VAE, in memory-mapped .npy files.

    lit-vdit cache-latents --data configs/data/ucf101.yaml --vae vae.ckpt --out latents/ucf101 \\
        [--data.init_args.frames 17 ...] [--batch-size 16] [--num-workers 4] [--device cuda]

``--vae`` is a VAEModule checkpoint (:func:`lit_vdit.models.vae.load_frozen_vae`) or ``identity``
(pixel space). The output folder holds ``{split}_latents.npy`` (N, c, t, h, w), ``{split}_labels.npy``
(N,) for the train and val splits, ``{split}_captions.json`` (the N captions, when the data has them),
and ``meta.json``: the setup (VAE checkpoint sha256 and weights
fingerprint, latent scale, clip shape, frame interval, data config) and how many clips of each
split are written. It is rewritten atomically after every flushed chunk, so running an interrupted
command again resumes it. Clips are taken at fixed starts (``random_start`` is turned off) and the
latents are the posterior mode, as :meth:`DiffusionModule.encode` computes them.

:class:`LatentDataModule` trains from the folder and refuses one whose setup differs from the
requested one; the DiffusionModule refuses one made by a VAE other than its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jsonargparse import ArgumentParser
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from lit_vdit.data.datamodule import VideoDataModule
from lit_vdit.data.layouts import VideoDecodeError
from lit_vdit.data.synthetic import UNBOUNDED_CLIPS
from lit_vdit.io import atomic_write_json, sha256_file
from lit_vdit.models.vae import IdentityVAE, vae_fingerprint

META = "meta.json"
FORMAT = 1
SPLITS = ("train", "val")
LOADER_ARGS = ("batch_size", "val_batch_size", "num_workers", "num_predict")


class SourceVideosUnavailableError(FileNotFoundError):
    """The videos a latent cache was encoded from cannot be read (needed as real clips for FVD / FID)."""


def load_vae(spec: str) -> tuple[nn.Module, str]:
    """``identity`` or a VAE checkpoint path -> (frozen VAE, its checkpoint's sha256 or "identity")."""
    if spec == "identity":
        return IdentityVAE(), "identity"
    from lit_vdit.models.vae import load_frozen_vae

    return load_frozen_vae(spec), sha256_file(spec)


def read_meta(cache_dir: str | Path) -> dict[str, Any]:
    file = Path(cache_dir) / META
    if not file.is_file():
        raise FileNotFoundError(
            f"{cache_dir} is not a latent cache (no {META}); build one with "
            f"`lit-vdit cache-latents --data CONFIG --vae CKPT --out {cache_dir}`"
        )
    return json.loads(file.read_text())


# -- building ----------------------------------------------------------------------------------------
def build_cache(
    datamodule: VideoDataModule,
    vae: nn.Module,
    vae_sha256: str,
    out: str | Path,
    data_config: dict[str, Any],
    batch_size: int = 16,
    num_workers: int = 0,
    device: str = "cpu",
    dtype: str = "float16",
) -> dict[str, Any]:
    """Encode the train and val clips of ``datamodule`` into ``out``, resuming a partial build."""
    out = Path(out)
    datamodule.prepare_data()
    datamodule.setup("fit")
    datasets = {"train": datamodule.train_set, "val": datamodule.val_set}
    if len(datamodule.train_set) >= UNBOUNDED_CLIPS:
        raise ValueError("an unbounded stream of clips cannot be cached: set the data's num_clips")
    _, frames, height, width = datamodule.clip_shape
    latent_shape = tuple(vae.latent_shape(frames, height, width))
    setup = {
        "vae_sha256": vae_sha256,
        "vae_fingerprint": vae_fingerprint(vae),
        "latent_scale": float(vae.scale_factor),
        "posterior": "mode",
        "clip_shape": list(datamodule.clip_shape),
        "frame_interval": int(datamodule.frame_interval),
        "latent_shape": list(latent_shape),
        "num_classes": datamodule.num_classes,
        "captions": "caption" in datamodule.train_set[0],
        "dtype": dtype,
        "clips": {split: len(dataset) for split, dataset in datasets.items()},
        "data": data_config,
    }
    setup = json.loads(json.dumps(setup, default=str))  # as it reads back from meta.json
    meta = {"format": FORMAT, "setup": setup, "written": dict.fromkeys(SPLITS, 0)}
    if (out / META).is_file():
        saved = read_meta(out)
        if saved.get("setup") != setup:
            changed = sorted(k for k in setup if saved.get("setup", {}).get(k) != setup[k])
            raise ValueError(
                f"{out} holds a latent cache of a different setup (differs in {', '.join(changed)}); "
                f"write to another --out folder or delete {out}"
            )
        meta = saved
    out.mkdir(parents=True, exist_ok=True)
    vae = vae.to(device)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
    ) as progress:
        for split, dataset in datasets.items():
            start, total = meta["written"][split], len(dataset)
            captions = datamodule.split_captions(split)
            if captions is not None and not start:  # known up front, in the clips' order
                atomic_write_json(out / f"{split}_captions.json", captions)
            mode = "r+" if start else "w+"
            latents = np.lib.format.open_memmap(
                out / f"{split}_latents.npy", mode, np.dtype(dtype), (total, *latent_shape)
            )
            labels = np.lib.format.open_memmap(out / f"{split}_labels.npy", mode, np.int64, (total,))
            if not start:
                atomic_write_json(out / META, meta)
            task = progress.add_task(f"encoding {split} clips", total=total, completed=start)
            loader = DataLoader(Subset(dataset, range(start, total)), batch_size, num_workers=num_workers)
            for batch in loader:
                with torch.no_grad():
                    z = vae.encode_latents(batch["video"].to(device))
                end = start + len(z)
                latents[start:end] = z.float().cpu().numpy()
                labels[start:end] = torch.as_tensor(batch["label"]).numpy()
                latents.flush()
                labels.flush()
                meta["written"][split] = start = end
                atomic_write_json(out / META, meta)
                progress.update(task, completed=end)
            del latents, labels
    return meta


def main(argv: list[str]) -> int:
    """``lit-vdit cache-latents``: see the module docstring."""
    parser = ArgumentParser(prog="lit-vdit cache-latents", description=__doc__.split("\n\n")[0])
    parser.add_subclass_arguments(VideoDataModule, "data", required=True, help="data config (YAML or class)")
    parser.add_argument("--vae", required=True, help="VAE checkpoint (.ckpt of a VAEModule) or 'identity'")
    parser.add_argument("--out", required=True, help="cache folder (created, or resumed)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    cfg = parser.parse_args(argv)
    if "random_start" in cfg.data.init_args:
        cfg.data.init_args.random_start = False  # a cache holds each clip once, at a fixed start
    data_config = cfg.data.as_dict()
    data_config["init_args"] = {k: v for k, v in data_config["init_args"].items() if k not in LOADER_ARGS}
    datamodule = parser.instantiate_classes(cfg).data
    vae, vae_sha256 = load_vae(cfg.vae)
    meta = build_cache(
        datamodule,
        vae,
        vae_sha256,
        cfg.out,
        data_config,
        cfg.batch_size,
        cfg.num_workers,
        cfg.device,
        cfg.dtype,
    )
    print(f"latent cache {cfg.out}: {meta['written']} clips of latent shape {meta['setup']['latent_shape']}")
    return 0


# -- training ----------------------------------------------------------------------------------------
def read_captions(cache_dir: str | Path, split: str) -> list[str] | None:
    """The captions a latent cache keeps for ``split`` (None when its data had none)."""
    file = Path(cache_dir) / f"{split}_captions.json"
    return json.loads(file.read_text()) if file.is_file() else None


class LatentDataset(Dataset):
    """``{"latent": (c, t, h, w) float32, "label": int}`` (and ``"caption"`` when the cache keeps
    them) from the first ``count`` cached clips of a split."""

    def __init__(self, cache_dir: str | Path, split: str, count: int) -> None:
        self.files = (Path(cache_dir) / f"{split}_latents.npy", Path(cache_dir) / f"{split}_labels.npy")
        self.count = count
        self.captions = read_captions(cache_dir, split)
        self.arrays: tuple[np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.count

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "arrays": None}  # workers open their own maps (a memmap pickles its data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        if self.arrays is None:
            self.arrays = tuple(np.load(file, mmap_mode="r") for file in self.files)
        latents, labels = self.arrays
        item = {"latent": torch.from_numpy(latents[index].astype(np.float32)), "label": int(labels[index])}
        return item if self.captions is None else {**item, "caption": self.captions[index]}


class LatentDataModule(VideoDataModule):
    """Trains from a latent cache: batches ``{"latent": (B, c, t, h, w), "label": (B,)}``.

    ``clip_shape`` is the pixel clip shape the cache was made from, so the DiffusionModule builds the
    same model as from the videos. The expected-setup arguments are checked against the cache's
    metadata when given; a mismatch, or an unfinished cache, is an error.

    Args:
        cache_dir: folder written by ``lit-vdit cache-latents``.
        num_clips: unique training clips (the data budget; the first n, nested as in the video
            DataModules); None for all.
        val_clips: validation clips; None for all.
        vae: expected VAE checkpoint (or ``identity``): its sha256 must be the cache's.
        frames, frame_interval, height, width: expected clip setup.
        source_root: where the source videos are now, if they moved since the cache was built.
            FVD / FID compare generated videos with the source videos the cache was encoded from
            (its data config is in meta.json), never with VAE reconstructions.
    """

    def __init__(
        self,
        cache_dir: str,
        num_clips: int | None = None,
        val_clips: int | None = None,
        vae: str | None = None,
        frames: int | None = None,
        frame_interval: int | None = None,
        height: int | None = None,
        width: int | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        num_predict: int = 8,
        seed: int = 0,
        source_root: str | None = None,
        prompts: list[str] | str | None = None,
        caption_cache: str | None = None,
    ) -> None:
        super().__init__(batch_size, val_batch_size, num_workers, num_predict, seed, prompts, caption_cache)
        self.cache_dir = cache_dir
        self.source_root = source_root
        self._source: VideoDataModule | None = None
        self.meta = read_meta(cache_dir)
        setup = self.meta["setup"]
        _, t, h, w = setup["clip_shape"]
        cached = {"frames": t, "frame_interval": setup["frame_interval"], "height": h, "width": w}
        if vae is not None:
            cached["vae"] = setup["vae_sha256"]
            vae = "identity" if vae == "identity" else sha256_file(vae)
        requested = {
            "frames": frames,
            "frame_interval": frame_interval,
            "height": height,
            "width": width,
            "vae": vae,
        }
        wrong = [
            f"{k}: cache {cached[k]}, requested {v}"
            for k, v in requested.items()
            if v is not None and cached[k] != v
        ]
        if wrong:
            raise ValueError(
                f"latent cache {cache_dir} does not match the requested setup ({'; '.join(wrong)}); "
                f"point cache_dir at a matching cache or build one with `lit-vdit cache-latents`"
            )
        unfinished = {
            s: f"{self.meta['written'][s]}/{n}"
            for s, n in setup["clips"].items()
            if self.meta["written"][s] < n
        }
        if unfinished:
            raise ValueError(
                f"latent cache {cache_dir} is unfinished ({unfinished} clips written): run the same "
                f"`lit-vdit cache-latents` command again to complete it"
            )
        self.num_clips, self.val_clips = num_clips, val_clips

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        return tuple(self.meta["setup"]["clip_shape"])

    @property
    def frame_interval(self) -> int:
        return int(self.meta["setup"]["frame_interval"])

    def source(self) -> VideoDataModule:
        """The DataModule the cache was encoded from (its config in meta.json), set up."""
        if self._source is None:
            config = json.loads(json.dumps(self.meta["setup"]["data"]))
            if self.source_root is not None:
                config.setdefault("init_args", {})["root"] = self.source_root
            parser = ArgumentParser(exit_on_error=False)
            parser.add_subclass_arguments(VideoDataModule, "data")
            source = parser.instantiate_classes(parser.parse_object({"data": config})).data
            try:
                source.prepare_data()
                source.setup("validate")
            except (OSError, ValueError, VideoDecodeError) as error:
                root = config.get("init_args", {}).get("root")
                raise SourceVideosUnavailableError(
                    f"the latent cache {self.cache_dir} was encoded from {config.get('class_path')} "
                    f"(root {root!r}); FVD / FID compare generated videos with those source videos, not "
                    f"with VAE reconstructions, and they cannot be read: {error}. Make them readable at "
                    f"{root!r}, or give their current folder with --data.init_args.source_root PATH"
                ) from error
            self._source = source
        return self._source

    def identity(self, split: str) -> dict[str, Any]:
        return self.source().identity(split)

    def real_videos(self, split: str) -> Dataset:
        """The first clips of the source's ``split``, as many as this cache's split holds: the
        cache holds their latents, in the same order."""
        return Subset(self.source().real_videos(split), range(len(self.split_set(split))))

    @property
    def num_classes(self) -> int:
        return self.meta["setup"]["num_classes"]

    @property
    def train_size(self) -> int:
        return min(
            self.num_clips or self.meta["setup"]["clips"]["train"], self.meta["setup"]["clips"]["train"]
        )

    def split_captions(self, split: str) -> list[str] | None:
        captions = read_captions(self.cache_dir, split)
        return captions[: len(self.split_set(split))] if captions is not None else None

    def check_vae(self, vae: nn.Module) -> None:
        """Refuse to train a model whose VAE is not the one that encoded the cache."""
        if vae_fingerprint(vae) != self.meta["setup"]["vae_fingerprint"]:
            raise ValueError(
                f"latent cache {self.cache_dir} was encoded by another VAE than the model's "
                f"({type(vae).__name__}); configure the VAE the cache was made with (checkpoint sha256 "
                f"{self.meta['setup']['vae_sha256'][:16]}) or rebuild the cache with "
                f"`lit-vdit cache-latents --vae <the model's VAE checkpoint>`"
            )

    def setup(self, stage: str | None = None) -> None:
        val = self.meta["setup"]["clips"]["val"]
        self.train_set = LatentDataset(self.cache_dir, "train", self.train_size)
        self.val_set = LatentDataset(self.cache_dir, "val", min(self.val_clips or val, val))
