"""Dataset lookup by name: the embedded digits, CIFAR-10/100 (torchvision) and ImageFolder trees."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from torchvision.datasets import CIFAR10, CIFAR100, ImageFolder

from sslib.data.digits import IMAGE_SIZE, DigitsDataset, check_split
from sslib.data.folder import CheckedImageFolder, class_folders, image_folder, read_class_list
from sslib.errors import ConfigError, MissingFileError

RGB = tuple[float, float, float]
# What build_dataset returns: a map-style dataset of (transform(image), label) items with its classes
# (names) and targets (per-sample labels). CIFAR100 is a CIFAR10, the checked image folders are ImageFolders.
LabelledDataset: TypeAlias = DigitsDataset | CIFAR10 | ImageFolder
IMAGENET_MEAN: RGB = (0.485, 0.456, 0.406)
IMAGENET_STD: RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetStats:
    """Per-dataset constants.

    Args:
        mean: The normalisation mean, RGB, in [0, 1] units.
        std: The normalisation standard deviation, RGB, in [0, 1] units.
        num_classes: The number of classes; ``None`` when it depends on the data, as for ``folder``.
        native_size: The side of the stored square images; ``None`` for variable-size images that need
            resize + center crop at evaluation.
    """

    mean: RGB
    std: RGB
    num_classes: int | None
    native_size: int | None


DATASET_STATS: dict[str, DatasetStats] = {
    # Digits: mean/std of all 1797 images after the 32x32 upsampling, computed once with
    # DigitsDataset's pixels / 255 (the same in the three replicated channels).
    "digits": DatasetStats((0.3053,) * 3, (0.3235,) * 3, 10, IMAGE_SIZE),
    "cifar10": DatasetStats((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 10, 32),
    "cifar100": DatasetStats((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 100, 32),
    "imagenet": DatasetStats(IMAGENET_MEAN, IMAGENET_STD, 1000, None),
    "imagenet100": DatasetStats(IMAGENET_MEAN, IMAGENET_STD, 100, None),
    "folder": DatasetStats(IMAGENET_MEAN, IMAGENET_STD, None, None),
}

# torchvision class and the folder its archive extracts to, per CIFAR variant.
_CIFAR: dict[str, tuple[type[CIFAR10], str]] = {
    "cifar10": (CIFAR10, "cifar-10-batches-py"),
    "cifar100": (CIFAR100, "cifar-100-python"),
}

# The standard ImageNet-100 classes (CMC's imagenet100.txt, also solo-learn's): imagenet100's default
# selection from a full ImageNet tree.
IMAGENET100_CLASSES = Path(__file__).with_name("imagenet100.txt")


def dataset_stats(name: str) -> DatasetStats:
    """The constants of dataset ``name``.

    Args:
        name: A key of :data:`DATASET_STATS`, e.g. ``"cifar10"``.

    Returns:
        Its constants.

    Raises:
        ConfigError: If ``name`` is unknown (the message lists the known).
    """
    if name not in DATASET_STATS:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(DATASET_STATS)}")
    return DATASET_STATS[name]


def build_dataset(
    name: str,
    root: str | Path,
    split: str,
    transform: Callable[[Any], Any] | None = None,
    download: bool = False,
    val_fraction: float = 0.2,
    seed: int = 0,
    class_list: str | Path | None = None,
    skip_corrupt: bool = False,
) -> LabelledDataset:
    """Split ``"train"`` or ``"val"`` of dataset ``name``; items are ``(transform(image), label)``.

    ``digits`` is built in memory (``root``/``download`` unused; ``val_fraction``/``seed`` pick its split).
    ``cifar10``/``cifar100`` read (or with ``download`` fetch) torchvision's archive folder under ``root``;
    their ``val`` split is the official test set. ``imagenet``, ``imagenet100`` and ``folder`` read
    ImageFolder trees ``root/train`` and ``root/val`` (one sub-folder per class); ``imagenet100`` defaults
    to the standard 100 classes when ``root`` holds more. Bad trees and images are one-line errors
    (:mod:`sslib.data.folder`).

    Args:
        name: A key of :data:`DATASET_STATS`.
        root: The dataset's folder (unused for ``digits``).
        split: ``"train"`` or ``"val"``.
        transform: Applied to each image.
        download: Whether to fetch a CIFAR archive that is not under ``root`` (CIFAR only).
        val_fraction: The fraction of every class in ``digits``' ``"val"`` split.
        seed: Picks ``digits``' split.
        class_list: A file naming the classes to keep, one per line (image folders only).
        skip_corrupt: Whether to drop the images PIL cannot verify instead of failing (image folders
            only).

    Returns:
        The dataset, with its ``classes`` (names) and ``targets`` (per-sample labels).

    Raises:
        ConfigError: If ``name`` or ``split`` is unknown, an option does not apply to the dataset, the
            tree selects more classes than the dataset has, or a tree or image is bad.
        MissingFileError: If the files or folders are not there (or a CIFAR download failed).
    """
    dataset_stats(name)
    check_split(split)
    if name in ("digits", *_CIFAR) and (class_list is not None or skip_corrupt):
        raise ConfigError(f"class_list and skip_corrupt apply to ImageFolder datasets, not {name}")
    if name == "digits":
        return DigitsDataset(split, val_fraction=val_fraction, seed=seed, transform=transform)
    if name in _CIFAR:
        return _cifar(name, Path(root), split == "train", transform, download)
    if download:
        raise ConfigError(
            f"{name} cannot be downloaded; place ImageFolder trees at {Path(root) / 'train'} "
            f"and {Path(root) / 'val'} and set download=False"
        )
    classes = _class_selection(name, Path(root), split, class_list)
    dataset = image_folder(Path(root), split, transform, classes, skip_corrupt)
    _check_class_count(name, dataset)
    return dataset


def _cifar(name: str, root: Path, train: bool, transform: Callable | None, download: bool) -> LabelledDataset:
    """torchvision CIFAR; missing files (or a failed download) are one ``FileNotFoundError`` line."""
    cls, folder = _CIFAR[name]
    try:
        return cls(str(root), train=train, transform=transform, download=download)
    except (RuntimeError, OSError) as err:  # not found / corrupted, or urllib's URLError (an OSError)
        how = f"the download failed ({' '.join(str(err).split())})" if download else "or set download=True"
        raise MissingFileError(
            f"{name} not found or corrupted in {root}: place the extracted '{folder}/' folder there, {how}"
        ) from None


def _class_selection(name: str, root: Path, split: str, class_list: str | Path | None) -> list[str] | None:
    """The classes named in ``class_list``; for ``imagenet100`` without one, the standard 100 when
    ``root/split`` holds more class folders; otherwise ``None`` (every class folder)."""
    if class_list is not None:
        return read_class_list(class_list)
    if name == "imagenet100" and root.is_dir() and len(class_folders(root / split)) > 100:
        return read_class_list(IMAGENET100_CLASSES)
    return None


def _check_class_count(name: str, dataset: CheckedImageFolder) -> None:
    """More classes than ``name`` has is a one-line ``ConfigError`` (labels would overflow the heads);
    fewer is a warning."""
    expected, found = dataset_stats(name).num_classes, len(dataset.classes)
    if expected is None or found == expected:
        return
    message = f"{name} has {expected} classes but {found} are selected in {dataset.root}"
    if found > expected:
        raise ConfigError(f"{message}; pick {expected} with data.class_list=/path/to/classes.txt")
    warnings.warn(message, stacklevel=3)
