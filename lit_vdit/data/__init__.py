"""Video datasets and LightningDataModules."""

from lit_vdit.data.datamodule import GenerationDataset, SyntheticDataModule, VideoDataModule
from lit_vdit.data.synthetic import SyntheticVideoDataset

__all__ = ["GenerationDataset", "SyntheticDataModule", "SyntheticVideoDataset", "VideoDataModule"]
