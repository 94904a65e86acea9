"""The train/val/test splits of the transfer datasets of the MIRA paper's Table 5, and of any image folder.

``TRANSFER_DATASETS`` names the torchvision dataset, the official splits and the metric of each dataset
as Ericsson et al.'s ``linear.py`` evaluates it (``LINEAR_DATASETS``). torchvision reads the files under
the given root and fetches them only with ``download=True``. Caltech-101 and SUN397 have no standard
split in torchvision: give them (like any other data) as an image folder ``ROOT/train/<class>/...``,
``ROOT/test/<class>/...`` and optionally ``ROOT/val/<class>/...``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import datasets as tv

from sslib.app.eval.transfer import TransferResult, logistic_transfer, random_val_split
from sslib.data import eval_transform
from sslib.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from sslib.data.folder import CheckedImageFolder, class_folders
from sslib.errors import ConfigError, MissingFileError
from sslib.metrics.features import extract_features

SPLITS = ("train", "val", "test")
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def voc_multi_hot(annotation: dict) -> torch.Tensor:
    """``(20,)`` float multi-hot of the classes with an object in a VOCDetection annotation (difficult
    objects included)."""
    objects = annotation["annotation"]["object"]
    present = {obj["name"] for obj in (objects if isinstance(objects, list) else [objects])}
    return torch.tensor([float(c in present) for c in VOC_CLASSES])


Builder = Callable[[Path, str, Callable, bool], Dataset]  # (root, split, transform, download)


@dataclass(frozen=True)
class TransferDataset:
    """How to read one dataset: ``build(root, split, transform, download)`` for the official splits
    (``has_val``: it has its own val split, else val is a random 20% of train), and its ``metric``."""

    metric: str
    build: Builder | None
    has_val: bool = False


def _train_test(cls: type, **kwargs) -> Builder:
    return lambda root, split, t, d: cls(root, split=split, transform=t, download=d, **kwargs)


def _cifar(cls: type) -> Builder:
    return lambda root, split, t, d: cls(root, train=split == "train", transform=t, download=d)


def _pets(root: Path, split: str, transform: Callable, download: bool) -> Dataset:
    split = "trainval" if split == "train" else split  # Pets' train split is its "trainval"
    return tv.OxfordIIITPet(
        root, split=split, target_types="category", transform=transform, download=download
    )


def _voc2007(root: Path, split: str, transform: Callable, download: bool) -> Dataset:
    return tv.VOCDetection(
        root,
        year="2007",
        image_set=split,
        transform=transform,
        target_transform=voc_multi_hot,
        download=download,
    )


TRANSFER_DATASETS: dict[str, TransferDataset] = {
    "aircraft": TransferDataset(
        "mean_per_class", _train_test(tv.FGVCAircraft, annotation_level="variant"), True
    ),
    "caltech101": TransferDataset("mean_per_class", None),
    "cars": TransferDataset("top1", _train_test(tv.StanfordCars)),
    "cifar10": TransferDataset("top1", _cifar(tv.CIFAR10)),
    "cifar100": TransferDataset("top1", _cifar(tv.CIFAR100)),
    "dtd": TransferDataset("top1", _train_test(tv.DTD, partition=1), True),
    "flowers": TransferDataset("mean_per_class", _train_test(tv.Flowers102), True),
    "food": TransferDataset("top1", _train_test(tv.Food101)),
    "pets": TransferDataset("mean_per_class", _pets),
    "sun397": TransferDataset("top1", None),
    "voc2007": TransferDataset("map11", _voc2007, True),
    "folder": TransferDataset("top1", None),
}


def parse_source(text: str) -> tuple[str, Path]:
    """``"NAME:ROOT"`` -> ``(NAME, ROOT)``; NAME is one of :data:`TRANSFER_DATASETS`."""
    name, sep, root = text.partition(":")
    if not sep or not root:
        raise ConfigError(f"a transfer dataset is NAME:ROOT (e.g. cifar10:data/cifar10), got {text!r}")
    if name not in TRANSFER_DATASETS:
        raise ConfigError(f"unknown transfer dataset {name!r}; available: {', '.join(TRANSFER_DATASETS)}")
    return name, Path(root)


def is_folder(root: Path) -> bool:
    """Whether ``root`` holds the image-folder layout (``train/`` and ``test/`` sub-folders)."""
    return (root / "train").is_dir() and (root / "test").is_dir()


def folder_splits(root: Path, transform: Callable) -> dict[str, Dataset]:
    """The ``train``, ``val`` (left out when absent) and ``test`` image folders of ``root``; every split
    must have the class folders of ``train``, else a one-line ``ConfigError``."""
    if not is_folder(root):
        raise MissingFileError(
            f"transfer folder {root} needs {root}/train/<class>/<images> and {root}/test/<class>/<images> "
            f"(and optionally {root}/val/<class>/<images>)"
        )
    classes = class_folders(root / "train")
    out: dict[str, Dataset] = {}
    for split in SPLITS:
        if split == "val" and not (root / split).is_dir():
            continue
        found = class_folders(root / split)
        if found != classes:
            differ = sorted(set(found) ^ set(classes))
            raise ConfigError(
                f"{root}/{split} and {root}/train have different classes: {', '.join(differ[:5])}"
            )
        out[split] = CheckedImageFolder(root / split, classes, transform)
    return out


def transfer_splits(
    name: str, root: Path, transform: Callable, download: bool = False, seed: int = 0
) -> dict[str, Dataset]:
    """``{"train", "val", "test"}`` datasets of ``name`` at ``root`` under ``transform``.

    An image folder at ``root`` is read as such whatever ``name``; otherwise torchvision's dataset.
    Without a val split, a random 20% of train (``seed``) becomes val.
    """
    spec = TRANSFER_DATASETS[name]
    if is_folder(root) or spec.build is None:
        splits = folder_splits(root, transform)
    else:
        try:
            splits = {
                s: spec.build(root, s, transform, download) for s in SPLITS if s != "val" or spec.has_val
            }
        except (RuntimeError, OSError) as err:  # torchvision: "Dataset not found ..." or a failed download
            how = "" if download else "; pass --download to fetch it"
            raise MissingFileError(f"{name} not found in {root}: {' '.join(str(err).split())}{how}") from None
    if "val" not in splits:
        train = splits["train"]
        train_idx, val_idx = random_val_split(len(cast(Sized, train)), seed=seed)
        splits["train"], splits["val"] = Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())
    return splits


def transfer_eval(
    backbone: torch.nn.Module,
    name: str,
    root: Path,
    image_size: int = 224,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    download: bool = False,
    cs: Sequence[float] | None = None,
    max_iter: int = 1000,
    seed: int = 0,
) -> TransferResult:
    """Table 5's linear transfer of the frozen ``backbone`` to dataset ``name`` at ``root``: features of
    the splits of :func:`transfer_splits` (short side resized to ``image_size``, center crop, ImageNet
    normalisation, as ``linear.py``), then :func:`sslib.app.eval.transfer.logistic_transfer` with the
    dataset's metric."""
    transform = eval_transform(image_size, IMAGENET_MEAN, IMAGENET_STD, resize=image_size)
    splits = transfer_splits(name, root, transform, download, seed)
    features = {
        split: extract_features(backbone, DataLoader(data, batch_size, num_workers=num_workers), device)
        for split, data in splits.items()
    }
    metric = TRANSFER_DATASETS[name].metric
    return logistic_transfer(features["train"], features["val"], features["test"], metric, cs, max_iter)
