"""Datasets, multi-crop augmentation and the Lightning data module."""

from sslib.data.datasets import DATASET_STATS, DatasetStats, build_dataset, dataset_stats
from sslib.data.digits import DigitsDataset
from sslib.data.module import SSLDataModule
from sslib.data.transforms import AUGMENT_PRESETS, Augment, CropGroup, MultiCropTransform, eval_transform

__all__ = [
    "AUGMENT_PRESETS",
    "DATASET_STATS",
    "Augment",
    "CropGroup",
    "DatasetStats",
    "DigitsDataset",
    "MultiCropTransform",
    "SSLDataModule",
    "build_dataset",
    "dataset_stats",
    "eval_transform",
]
