"""Offline evaluation of a checkpoint's frozen backbone: cached features, kNN on label fractions, linear probe.

``FeatureCache`` extracts (once) and caches the features of a dataset split; ``knn_eval`` runs the weighted
kNN with a class-stratified fraction of the labelled train set as the bank (the MIRA paper's Table 3
protocol); ``linear_eval`` / ``linear_eval_augmented`` train a linear probe on the frozen backbone.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from sslib.app.datamodule import _eval_resize
from sslib.app.eval.sources import BackboneSource, load_any_backbone
from sslib.data import build_dataset, dataset_stats, eval_transform
from sslib.data.digits import check_split
from sslib.errors import ConfigError, MissingFileError
from sslib.io import atomic_write_bytes
from sslib.metrics.features import extract_features
from sslib.metrics.knn import knn_accuracy, topk_accuracy
from sslib.validation import check_int_at_least, check_positive, check_unit_interval

DEFAULT_IMAGE_SIZE = 224  # evaluation size of variable-size (ImageNet-like) datasets
CROP_SCALE = (0.08, 1.0)  # random resized crop of the augmented linear probe


def default_image_size(dataset: str) -> int:
    """The evaluation image side of ``dataset`` when none is chosen: its native size, else 224."""
    return dataset_stats(dataset).native_size or DEFAULT_IMAGE_SIZE


def check_device(device: torch.device | str | None) -> torch.device | None:
    """``device`` as a ``torch.device`` (``None`` stays ``None``: CUDA when available); an unknown device
    or CUDA on a machine without it is a one-line ``ConfigError``."""
    if device is None:
        return None
    try:
        checked = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be a torch device such as cpu or cuda:0, got {device!r}") from None
    if checked.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asks for CUDA, which this machine does not have; use cpu")
    return checked


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file at ``path``, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class _HasClasses(Protocol):
    classes: Sequence[str]


class FeatureCache:
    """Frozen-backbone features of one checkpoint on one dataset, cached on disk next to the checkpoint.

    ``features(split)`` returns ``(features (N, D) float32, labels (N,))`` of ``split`` under the
    evaluation transform at ``image_size`` (default: the dataset's native size, else 224 after a resize of
    the short side to 256). The first call extracts them in batches (CUDA when available) and saves them
    in ``<checkpoint>.features/``; later calls load that file (``weights_only=True``). Files are keyed by
    the checkpoint's sha256, the dataset and its resolved root, the split and the image size (and, for a
    checkpoint that is not an sslib run, its ``source`` format and architecture; with ``options``, those
    further :func:`sslib.data.build_dataset` arguments, e.g. a run's split ``seed`` or ``class_list``), so a
    changed checkpoint or setting never reads stale features.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        dataset: str,
        root: str | Path = "data",
        image_size: int | None = None,
        batch_size: int = 256,
        num_workers: int = 0,
        device: torch.device | str | None = None,
        source: BackboneSource | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.source = source or BackboneSource()
        if not self.checkpoint.is_file():
            raise MissingFileError(f"checkpoint '{self.checkpoint}' does not exist")
        self.stats = dataset_stats(dataset)
        self.dataset, self.root, self.options = dataset, Path(root), dict(options or {})
        size = image_size or default_image_size(dataset)
        self.image_size = check_int_at_least("image_size", size, 1)
        self.batch_size = check_int_at_least("batch_size", batch_size, 1)
        self.num_workers = check_int_at_least("num_workers", num_workers, 0)
        self.device = check_device(device)
        self.digest = file_sha256(self.checkpoint)

    @cached_property
    def backbone(self) -> nn.Module:
        """The checkpoint's backbone (loaded on first use: a cache hit never reads the weights)."""
        return load_any_backbone(self.checkpoint, self.source)

    def build(self, split: str, transform: Callable | None) -> Dataset:
        """Split ``split`` of the dataset with ``transform``."""
        return build_dataset(self.dataset, self.root, split, transform, **self.options)

    def class_names(self, split: str) -> list[str]:
        """The names of the classes of ``split``, in label order (digits: ``"0"``-``"9"``; an image
        folder: its class folders)."""
        return list(cast(_HasClasses, self.build(split, None)).classes)

    def class_count(self, dataset: Dataset) -> int:
        """The dataset's number of classes: from its statistics, else from ``dataset`` (one of its splits,
        which, as every torchvision dataset and image folder, lists its ``classes``)."""
        return self.stats.num_classes or len(cast(_HasClasses, dataset).classes)

    def eval_transform(self) -> Callable:
        """Center crop at ``image_size`` (after a resize of the short side for variable-size images)."""
        resize = _eval_resize(self.image_size, self.stats.native_size)
        return eval_transform(self.image_size, self.stats.mean, self.stats.std, resize=resize)

    def train_transform(self) -> Callable:
        """Random resized crop (scale 0.08-1) at ``image_size`` and horizontal flip, then normalisation:
        the training augmentation of the augmented probe and of fine-tuning (SwAV's ``eval_semisup.py``,
        SimCLR appendix B.5)."""
        return v2.Compose(
            [
                v2.ToImage(),
                v2.RandomResizedCrop(self.image_size, scale=CROP_SCALE, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(self.stats.mean, self.stats.std),
            ]
        )

    def key(self, split: str) -> dict[str, str | int]:
        """What the features of ``split`` depend on."""
        return {
            "checkpoint_sha256": self.digest,
            "dataset": self.dataset,
            "root": str(self.root.resolve()),
            "split": check_split(split),
            "image_size": self.image_size,
            **(
                {}
                if self.source.fmt == "sslib"
                else {"format": self.source.fmt, "arch": str(self.source.arch)}
            ),
            **({"options": json.dumps(self.options, sort_keys=True)} if self.options else {}),
        }

    def path(self, split: str) -> Path:
        """The cache file of ``split``: ``<checkpoint>.features/<dataset>-<split>-<size>px-<key hash>.pt``."""
        tag = hashlib.sha256(json.dumps(self.key(split), sort_keys=True).encode()).hexdigest()[:16]
        folder = self.checkpoint.parent / f"{self.checkpoint.name}.features"
        return folder / f"{self.dataset}-{split}-{self.image_size}px-{tag}.pt"

    def features(self, split: str) -> tuple[Tensor, Tensor]:
        """``(features, labels)`` of ``split``, from the cache file or extracted and then cached."""
        key, path = self.key(split), self.path(split)
        cached = _load_cached(path, key)
        if cached is not None:
            return cached
        loader = DataLoader(
            self.build(split, self.eval_transform()), batch_size=self.batch_size, num_workers=self.num_workers
        )
        features, labels = extract_features(self.backbone, loader, self.device)
        buffer = io.BytesIO()
        torch.save({"key": key, "features": features, "labels": labels}, buffer)
        atomic_write_bytes(path, buffer.getvalue())
        return features, labels


def _load_cached(path: Path, key: dict[str, str | int]) -> tuple[Tensor, Tensor] | None:
    """The cached ``(features, labels)`` at ``path`` if it exists, loads safely and has ``key``."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable or foreign file: extract again and overwrite it
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    return payload["features"], payload["labels"]


def cached_features(
    checkpoint: str | Path, dataset: str, split: str, root: str | Path = "data", **kwargs
) -> tuple[Tensor, Tensor]:
    """``FeatureCache(checkpoint, dataset, root, **kwargs).features(split)``."""
    return FeatureCache(checkpoint, dataset, root, **kwargs).features(split)


# --- kNN on label fractions ------------------------------------------------------------------------------


def check_fraction(fraction: float, name: str = "label fraction") -> float:
    """``fraction`` in (0, 1], else a one-line ``ConfigError`` naming it ``name``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ConfigError(f"{name} must be in (0, 1], got {fraction!r}")
    return float(fraction)


def stratified_subset(labels: Tensor, fraction: float, seed: int = 0) -> Tensor:
    """Sorted indices of a reproducible class-stratified ``fraction`` of ``labels`` ``(N,)``.

    Each class with ``n`` samples keeps ``max(1, round(fraction * n))`` of them, the first ones of a
    permutation drawn from a generator seeded with ``seed``. The permutations do not depend on
    ``fraction``, so for one seed smaller subsets are contained in larger ones.
    """
    check_fraction(fraction)
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for cls in labels.unique():
        members = (labels == cls).nonzero().flatten()
        keep = max(1, round(fraction * len(members)))
        picks.append(members[torch.randperm(len(members), generator=generator)[:keep]])
    return torch.cat(picks).sort().values


def _num_classes(num_classes: int | None, *labels: Tensor) -> int:
    """``num_classes``, or one more than the largest label."""
    return num_classes or 1 + max(int(y.max()) for y in labels)


def knn_eval(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    k: int = 20,
    temperature: float = 0.07,
    fractions: Sequence[float] = (1.0, 0.1, 0.01),
    seed: int = 0,
    num_classes: int | None = None,
    subsets: Mapping[float, Tensor] | None = None,
) -> dict[float, dict[str, float]]:
    """Weighted kNN top-1/top-5 (percent) of the val split, per fraction of labelled train samples.

    For each fraction the bank is ``subsets[fraction]`` (train indices, e.g. SimCLR's ImageNet lists from
    :func:`sslib.app.eval.subsets.label_subset`) when given, else :func:`stratified_subset` of the train
    split (paper Table 3: kNN with 100%, 10% and 1% of the labels); ``num_classes`` defaults to one more
    than the largest label.
    """
    fractions = [check_fraction(f) for f in fractions]
    num_classes = _num_classes(num_classes, train_labels, val_labels)
    results = {}
    for fraction in fractions:
        idx = (
            subsets[fraction]
            if subsets and fraction in subsets
            else stratified_subset(train_labels, fraction, seed)
        )
        results[fraction] = knn_accuracy(
            train_features[idx], train_labels[idx], val_features, val_labels, num_classes, k, temperature
        )
    return results


# --- linear probe ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeSettings:
    """Linear-probe training: SGD with ``momentum``, learning rate decayed from ``lr`` to 0 by a cosine
    over all steps; ``seed`` fixes the probe's initialisation and the batch order."""

    epochs: int = 100
    lr: float = 0.1
    batch_size: int = 256
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        check_int_at_least("epochs", self.epochs, 1)
        check_positive("lr", self.lr)
        check_int_at_least("batch_size", self.batch_size, 1)
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        check_unit_interval("momentum", self.momentum)


def _default_device(device: torch.device | str | None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _train_probe(
    epoch_batches: Callable[[torch.Generator], Iterable[tuple[Tensor, Tensor]]],
    steps_per_epoch: int,
    feat_dim: int,
    num_classes: int,
    settings: ProbeSettings,
    device: torch.device,
) -> nn.Linear:
    """A linear classifier trained on the ``(features, labels)`` batches ``epoch_batches(generator)`` yields
    per epoch (``generator`` is seeded once with ``settings.seed``)."""
    generator = torch.Generator().manual_seed(settings.seed)
    probe = nn.Linear(feat_dim, num_classes)
    with torch.no_grad():
        probe.weight.normal_(0.0, 0.01, generator=generator)
        probe.bias.zero_()
    probe.to(device)
    optimizer = torch.optim.SGD(
        probe.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * steps_per_epoch)
    for _ in range(settings.epochs):
        for features, labels in epoch_batches(generator):
            loss = F.cross_entropy(probe(features.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return probe.eval()


def _probe_accuracy(probe: nn.Linear, val_features: Tensor, val_labels: Tensor) -> dict[str, float]:
    with torch.no_grad():
        return topk_accuracy(probe(val_features.to(probe.weight.device)), val_labels)


def linear_eval(
    train_features: Tensor,
    train_labels: Tensor,
    val_features: Tensor,
    val_labels: Tensor,
    settings: ProbeSettings | None = None,
    num_classes: int | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Top-1/top-5 (percent) on val of a linear probe trained on precomputed frozen features.

    The fast protocol: every epoch sees the same (center-crop) train features, shuffled. The paper's
    protocol trains on augmented images instead; see :func:`linear_eval_augmented`.
    """
    settings = settings or ProbeSettings()
    device = _default_device(device)
    train_features, train_labels = train_features.to(device), train_labels.to(device)

    def epoch_batches(generator: torch.Generator) -> Iterable[tuple[Tensor, Tensor]]:
        order = torch.randperm(len(train_labels), generator=generator).to(device)
        for idx in order.split(settings.batch_size):
            yield train_features[idx], train_labels[idx]

    probe = _train_probe(
        epoch_batches,
        math.ceil(len(train_labels) / settings.batch_size),
        train_features.shape[1],
        _num_classes(num_classes, train_labels, val_labels),
        settings,
        device,
    )
    return _probe_accuracy(probe, val_features, val_labels)


def linear_probe(
    cache: FeatureCache,
    settings: ProbeSettings | None = None,
    augment: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Top-1/top-5 (percent) of a linear probe on ``cache``'s backbone: on augmented images
    (:func:`linear_eval_augmented`) with ``augment``, else on its precomputed features (:func:`linear_eval`)."""
    if augment:
        return linear_eval_augmented(cache, settings)
    return linear_eval(
        *cache.features("train"), *cache.features("val"), settings, cache.stats.num_classes, device
    )


def linear_eval_augmented(cache: FeatureCache, settings: ProbeSettings | None = None) -> dict[str, float]:
    """Top-1/top-5 (percent) on val of a linear probe trained on augmented images (the paper's protocol).

    Every step draws random resized crops (scale 0.08-1) with horizontal flips of the train images and
    passes them through the frozen backbone (eval mode, no gradients), so it costs a backbone forward per
    image and epoch; the val features come from ``cache`` (center crop). Slower but closer to the
    published numbers than :func:`linear_eval` on precomputed features.
    """
    settings = settings or ProbeSettings()
    device = _default_device(cache.device)
    train_set = cache.build("train", cache.train_transform())
    val_features, val_labels = cache.features("val")
    backbone = cache.backbone.to(device).eval()

    def epoch_batches(generator: torch.Generator) -> Iterable[tuple[Tensor, Tensor]]:
        loader = DataLoader(
            train_set,
            batch_size=settings.batch_size,
            shuffle=True,
            num_workers=cache.num_workers,
            generator=generator,
        )
        for images, labels in loader:
            with torch.no_grad():  # not around the yield: the caller's steps need gradients
                features = backbone(images.to(device))
            yield features, labels

    num_classes = cache.class_count(train_set)
    steps_per_epoch = math.ceil(len(cast(Sized, train_set)) / settings.batch_size)
    with torch.random.fork_rng(devices=[]):  # seeded crops (drawn from the global RNG), restored afterwards
        torch.manual_seed(settings.seed)
        probe = _train_probe(
            epoch_batches, steps_per_epoch, val_features.shape[1], num_classes, settings, device
        )
    return _probe_accuracy(probe, val_features, val_labels)
