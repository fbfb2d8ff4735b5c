"""A sample gallery: the same prompts (or classes) and noise seeds sampled from each model size's final
checkpoint, one row of frame strips per size, so quality can be seen to grow with N."""

from __future__ import annotations

import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import torch
from matplotlib.figure import Figure

from analysis.plots import Plot
from lit_vdit.build import RunBuild, quiet_lightning
from lit_vdit.checkpoint_io import AtomicCheckpointIO
from lit_vdit.data import VideoDataModule

GAP = 2  # pixels of white between videos


def sample_run(built: RunBuild, checkpoint: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A built run's predict set (its DataModule's prompts or labels, and per-video noise seeds)
    generated from ``checkpoint`` through ``Trainer.predict``: videos (B, C, T, H, W) in [-1, 1] and
    their labels."""
    with quiet_lightning():
        trainer = L.Trainer(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            plugins=[AtomicCheckpointIO()],
        )
        outputs = trainer.predict(built.module, datamodule=built.datamodule, ckpt_path=str(checkpoint))
    return torch.cat([out["video"] for out in outputs]), torch.cat([out["label"] for out in outputs])


def real_clips(datamodule: VideoDataModule, labels: torch.Tensor) -> torch.Tensor:
    """For each label, the first validation clip of that class in the DataModule (B, C, T, H, W)."""
    clips = datamodule.real_videos("val")
    first: dict[int, torch.Tensor] = {}
    for i in range(len(clips)):
        item = clips[i]
        first.setdefault(int(item["label"]), item["video"])
        if all(int(y) in first for y in labels):
            break
    return torch.stack([first[int(y)] for y in labels])


def frame_strip(videos: torch.Tensor) -> np.ndarray:
    """Videos (B, C, T, H, W) in [-1, 1] side by side, each as its T frames in a row: (H, W', 3) in [0, 1]."""
    frames = ((videos.float().clamp(-1, 1) + 1) / 2).permute(0, 3, 2, 4, 1).numpy()  # B, H, T, W, C
    b, h, t, w, c = frames.shape
    rgb = frames if c == 3 else np.repeat(frames[..., :1], 3, axis=-1)
    pieces = []
    for video in rgb:
        pieces += [video.reshape(h, t * w, 3), np.ones((h, GAP, 3))]
    return np.concatenate(pieces[:-1], axis=1)


def gallery(rows: list[tuple[str, torch.Tensor]], caption: str, prompts: list[str] | None = None) -> Plot:
    """One row per (label, videos): each video's frames left to right, videos separated by a gap; with
    ``prompts``, each column's prompt printed under the last row."""
    strips = [frame_strip(videos) for _, videos in rows]
    height, width = strips[0].shape[:2]
    under = 0.9 if prompts else 0.0  # inches of prompt text under the rows
    fig = Figure(figsize=(min(14.0, 0.9 + width / 20), 0.3 + under + len(rows) * max(0.7, height / 20)))
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, _), strip in zip(axes, rows, strips, strict=True):
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        for side in ax.spines.values():
            side.set_visible(False)
    if prompts:
        video_width = (width + GAP) / len(prompts)
        axes[-1].set_xticks([(i + 0.5) * video_width - GAP / 2 for i in range(len(prompts))])
        axes[-1].set_xticklabels([textwrap.fill(p, 22) for p in prompts], fontsize=7)
        axes[-1].tick_params(length=0)
    bottom = under / fig.get_figheight() + 0.01
    fig.subplots_adjust(left=0.12, right=0.99, top=0.99, bottom=bottom, hspace=0.15)
    return Plot("samples", caption, fig)
