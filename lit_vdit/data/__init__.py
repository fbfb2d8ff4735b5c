"""Video datasets and LightningDataModules."""

from lit_vdit.data.datamodule import GenerationDataset, SyntheticDataModule, VideoDataModule
from lit_vdit.data.latents import LatentDataModule, LatentDataset
from lit_vdit.data.layouts import FrameFolders, VideoDecodeError, VideoFiles
from lit_vdit.data.synthetic import SyntheticVideoDataset
from lit_vdit.data.video import ClipDataset, FrameFolderDataModule, VideoFolderDataModule

__all__ = [
    "ClipDataset",
    "FrameFolderDataModule",
    "FrameFolders",
    "GenerationDataset",
    "LatentDataModule",
    "LatentDataset",
    "SyntheticDataModule",
    "SyntheticVideoDataset",
    "VideoDataModule",
    "VideoDecodeError",
    "VideoFiles",
    "VideoFolderDataModule",
]
