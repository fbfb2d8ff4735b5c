"""Video datasets and LightningDataModules."""

from lit_vdit.data.clips import ClipDataset
from lit_vdit.data.datamodule import GenerationDataset, SyntheticDataModule, VideoDataModule
from lit_vdit.data.latents import LatentDataModule, LatentDataset
from lit_vdit.data.layouts import FrameFolders, ImageFiles, VideoDecodeError, VideoFiles
from lit_vdit.data.synthetic import SyntheticVideoDataset
from lit_vdit.data.video import FrameFolderDataModule, VideoFolderDataModule

__all__ = [
    "ClipDataset",
    "FrameFolderDataModule",
    "FrameFolders",
    "GenerationDataset",
    "ImageFiles",
    "LatentDataModule",
    "LatentDataset",
    "SyntheticDataModule",
    "SyntheticVideoDataset",
    "VideoDataModule",
    "VideoDecodeError",
    "VideoFiles",
    "VideoFolderDataModule",
]
