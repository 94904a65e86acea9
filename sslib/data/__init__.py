"""Datasets, multi-crop augmentation and the loaders (torchvision, DALI, on the device); the Lightning data
module that serves them to a run is :class:`sslib.app.datamodule.SSLDataModule`."""

from sslib.data.datasets import DATASET_STATS, DatasetStats, build_dataset, dataset_stats
from sslib.data.digits import DigitsDataset
from sslib.data.transforms import Augment, CropGroup, MultiCropTransform, eval_transform

__all__ = [
    "DATASET_STATS",
    "Augment",
    "CropGroup",
    "DatasetStats",
    "DigitsDataset",
    "MultiCropTransform",
    "build_dataset",
    "dataset_stats",
    "eval_transform",
]
