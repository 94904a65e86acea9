"""Labelled subsets of a train split: SimCLR's ImageNet 1% / 10% image lists, or stratified per class.

The semi-supervised protocols (MIRA paper Table 4, as SimCLR, BYOL and SwAV) fine-tune on the same
12 811 (1%) and 128 116 (10%) ImageNet train images: the lists ``imagenet_subsets/1percent.txt`` and
``10percent.txt`` of google-research/simclr (commit be133b38fb21abb77403391dc6db3412edfe92f2,
Apache-2.0), shipped unchanged in ``sslib/data/imagenet_subsets/``. SwAV's ``eval_semisup.py`` reads the
same files, and so do the kNN banks of 1% and 10% of ImageNet (:func:`knn_subsets`). On ``imagenet100``
the lists are restricted to its 100 classes; any other dataset gets
:func:`sslib.app.eval.offline.stratified_subset` (the same images for the same seed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from sslib.app.eval.offline import FeatureCache, check_fraction, stratified_subset
from sslib.data.folder import names
from sslib.errors import ConfigError, MissingFileError

SUBSET_DIR = Path(__file__).parents[2] / "data" / "imagenet_subsets"  # sslib/data, shipped in the wheel
SIMCLR_SUBSETS: dict[float, Path] = {0.01: SUBSET_DIR / "1percent.txt", 0.1: SUBSET_DIR / "10percent.txt"}
LISTED_DATASETS = ("imagenet", "imagenet100")  # ImageFolder trees of ImageNet train file names


def dataset_labels(dataset: Dataset) -> Tensor:
    """The ``(N,)`` integer labels of ``dataset`` (its ``targets``), without loading any image."""
    targets = getattr(dataset, "targets", None)
    if targets is None:
        raise ConfigError(f"{type(dataset).__name__} has no 'targets' list to draw a labelled subset from")
    return torch.as_tensor(targets, dtype=torch.long)


def read_image_list(path: str | Path) -> list[str]:
    """The image file names in ``path``, one per line (e.g. ``n01440764_10026.JPEG``); blank lines are
    skipped. A missing file, no names or a repeated name is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"subset file {path} does not exist; expected one image file name per line")
    listed = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not listed:
        raise ConfigError(f"subset file {path} names no image; expected one image file name per line")
    repeated = sorted(n for n, count in Counter(listed).items() if count > 1)
    if repeated:
        raise ConfigError(f"subset file {path} repeats images: {names(repeated)}")
    return listed


def listed_subset(
    dataset: Dataset, listed: Sequence[str], source: str, own_classes_only: bool = False
) -> Tensor:
    """Sorted indices of the images of ``dataset`` (an ImageFolder: ``samples``, ``classes``) whose file
    names are ``listed``.

    Every listed name must be an image of ``dataset`` whose folder is its class, else a one-line
    ``ValueError`` names the first few. ``own_classes_only`` first drops the names of classes ``dataset``
    does not have (a 1000-class list on a 100-class subset of ImageNet).
    """
    samples = getattr(dataset, "samples", None)
    if samples is None:
        raise ConfigError(f"an image list needs an ImageFolder dataset, got {type(dataset).__name__}")
    folder = cast(ImageFolder, dataset)  # an ImageFolder, or a dataset with its samples, classes and root
    index = {(Path(path).parent.name, Path(path).name): i for i, (path, _) in enumerate(samples)}
    classes = set(folder.classes)
    wanted = [(name.split("_", 1)[0], name) for name in listed]
    if own_classes_only:
        wanted = [pair for pair in wanted if pair[0] in classes]
    unknown = [name for cls, name in wanted if cls not in classes]
    if unknown:
        raise ConfigError(
            f"{len(unknown)} images of {source} belong to no class of {folder.root} "
            f"(names start with the class folder, e.g. n01440764_10026.JPEG): {names(unknown)}"
        )
    missing = [name for cls, name in wanted if (cls, name) not in index]
    if missing:
        raise ConfigError(
            f"{len(missing)} images of {source} are missing from {folder.root}: {names(missing)}"
        )
    if not wanted:
        raise ConfigError(f"{source} names no image of the classes of {folder.root}")
    return torch.tensor(sorted(index[pair] for pair in wanted))


def label_subset(
    dataset: Dataset, name: str, fraction: float, seed: int = 0, subset_file: str | Path | None = None
) -> Tensor:
    """Sorted indices of the labelled subset of the train split ``dataset`` of dataset ``name``.

    ``subset_file``: the images it lists. Else for ``imagenet``/``imagenet100`` with ``fraction`` 0.01 or
    0.1: SimCLR's list. Else the class-stratified ``fraction`` drawn with ``seed``
    (:func:`sslib.app.eval.offline.stratified_subset`); ``fraction`` 1 is the whole split.
    """
    fraction = check_fraction(fraction)
    if subset_file is not None:
        return listed_subset(dataset, read_image_list(subset_file), f"subset file {subset_file}")
    if name in LISTED_DATASETS and fraction in SIMCLR_SUBSETS:
        path = SIMCLR_SUBSETS[fraction]
        return listed_subset(
            dataset, read_image_list(path), f"SimCLR's {path.name}", own_classes_only=name != "imagenet"
        )
    return stratified_subset(dataset_labels(dataset), fraction, seed)


def knn_subsets(cache: FeatureCache, fractions: Sequence[float], seed: int = 0) -> dict[float, Tensor]:
    """The kNN banks of ``cache``'s train split that are image lists: SimCLR's 1% and 10% on ImageNet
    (:func:`label_subset`); the other fractions are left to :func:`sslib.app.eval.offline.knn_eval`'s
    stratified draw. The indices follow the order of ``cache.features("train")``."""
    listed = [f for f in fractions if cache.dataset in LISTED_DATASETS and f in SIMCLR_SUBSETS]
    if not listed:
        return {}
    train = cache.build("train", None)
    return {f: label_subset(train, cache.dataset, f, seed) for f in listed}
