"""``SSLDataModule``: multi-crop training batches plus the kNN-bank and validation loaders."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import lightning
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets import ImageFolder

from sslib.app.builders import AUGMENT_PRESETS, augment_preset, config_keys, section_keys
from sslib.data.datasets import LabelledDataset, build_dataset, dataset_stats
from sslib.data.loaders import choose_loader
from sslib.data.sampling import EpochSampler, SeededDataset
from sslib.data.transforms import Augment, CropGroup, MultiCropTransform, eval_transform
from sslib.distributed import rank, world_size
from sslib.errors import ConfigError
from sslib.validation import check_int_at_least

DEFAULT_GLOBAL_CROPS = CropGroup(n=2, size=32)  # two 32x32 views, scale (0.08, 1)


def _eval_resize(size: int, native_size: int | None) -> int | None:
    """Short side to resize to before center-cropping ``size`` at evaluation; ``None`` when the stored
    images already are ``size`` x ``size``; ``size / 0.875`` (256 for 224) for variable-size images."""
    if native_size == size:
        return None
    return size if native_size else round(size / 0.875)


AUGMENT_KEYS = section_keys("augment", (f.name for f in dataclasses.fields(Augment)))


def _crop_group(key: str, value: Mapping[str, Any] | CropGroup) -> CropGroup:
    """``value`` as a :class:`CropGroup`; its errors name ``key.size``, ``key.n``, ``key.scale``."""
    if isinstance(value, CropGroup):
        return value
    with config_keys(section_keys(key, (f.name for f in dataclasses.fields(CropGroup)))):
        return CropGroup(**value)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(requested: int) -> int:
    """``requested`` DataLoader workers, at most one fewer than :func:`available_cpus` (one left for the
    training process; at least one worker when any is requested)."""
    return min(requested, max(1, available_cpus() - 1))


def stratified_subset(targets: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Sorted indices of ``round(fraction * n_c)`` (at least 1) samples of every class ``c`` (``n_c``
    samples), drawn by a generator seeded with ``seed``: the same subset on every rank and every run."""
    labels = torch.as_tensor(list(targets), dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten()
        count = max(1, round(fraction * len(members)))
        keep.append(members[torch.randperm(len(members), generator=generator)[:count]])
    return sorted(torch.cat(keep).tolist())


def shard(n: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous share of ``range(n)``: the first ``n % world`` ranks hold one more, so
    shards are disjoint, cover ``range(n)``, and concatenated in rank order give it back in order."""
    size, extra = divmod(n, world)
    start = rank * size + min(rank, extra)
    return range(start, start + size + (rank < extra))


class SSLDataModule(lightning.LightningDataModule):
    """Dataset ``name`` as multi-crop training batches and two evaluation loaders, from plain kwargs.

    ``train_dataloader()`` yields ``(crops, labels, indices)``: ``crops`` is a list of ``n_crops`` float32
    (B, 3, size, size) batches, global crops first; ``labels`` (B,) are for monitoring only; ``indices``
    (B,) are the samples' positions in the train split (per-sample state, e.g. DeepCluster-v2's memory).
    ``val_dataloader()`` returns ``[bank, val]``: the train split (or a per-class ``bank_fraction`` of
    it, drawn with ``seed``) and the val split with the evaluation transform, both yielding
    ``(images (B, 3, S, S), labels (B,))`` with ``S = global_crops.size``; under ``torch.distributed``
    each rank gets its contiguous :func:`shard` of both.

    ``augment`` may be an ``Augment`` (used as is) or a mapping of fields that override the dataset's
    recipe: solo-learn's CIFAR recipe for 32x32 datasets (digits, CIFAR), BYOL/DINO's ImageNet one otherwise.

    ``loader`` builds the training batches: ``"torchvision"``, ``"dali"`` (image folders, NVIDIA DALI),
    ``"device"`` (the train split as one uint8 tensor on the GPU, or the CPU without CUDA, cropped there in
    batches; :mod:`sslib.data.device`) or ``"auto"`` (DALI when installed, with CUDA, on an image folder);
    see :mod:`sslib.data.loaders`.

    ``num_workers`` is an upper bound: the loaders start :func:`worker_count` workers, so that a machine
    with fewer CPUs is not oversubscribed; ``pin_memory`` applies only where CUDA is available (pinned
    memory speeds up copies to a GPU and nothing else).
    """

    name: str  # the dataset's name (LightningDataModule's optional name, always set here)

    def __init__(
        self,
        name: str = "digits",
        root: str | Path = "data",
        batch_size: int = 256,
        num_workers: int = 0,
        global_crops: Mapping[str, Any] | CropGroup = DEFAULT_GLOBAL_CROPS,
        local_crops: Mapping[str, Any] | CropGroup | None = None,
        augment: Mapping[str, Any] | Augment | None = None,
        download: bool = False,
        val_fraction: float = 0.2,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        drop_last: bool = True,
        seed: int = 0,
        class_list: str | None = None,
        skip_corrupt: bool = False,
        loader: str = "auto",
        bank_fraction: float = 1.0,
    ) -> None:
        super().__init__()
        self.stats = dataset_stats(name)
        self.name, self.root, self.download = name, root, download
        self.batch_size = check_int_at_least("batch_size", batch_size, 1)
        self.num_workers = worker_count(check_int_at_least("num_workers", num_workers, 0))
        self.val_fraction, self.seed = val_fraction, seed
        if isinstance(bank_fraction, bool) or not (
            isinstance(bank_fraction, (int, float)) and 0 < bank_fraction <= 1
        ):
            raise ConfigError(f"bank_fraction must be a number in (0, 1], got {bank_fraction!r}")
        self.bank_fraction = float(bank_fraction)
        self.class_list, self.skip_corrupt = class_list, skip_corrupt
        self.pin_memory = pin_memory and torch.cuda.is_available()  # only a CUDA copy reads pinned memory
        self.drop_last = drop_last
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.loader = choose_loader(loader, name)
        if not (augment is None or isinstance(augment, (Mapping, Augment))):
            raise ConfigError(
                f"augment must be a mapping of augmentation settings, got {augment!r} "
                f"(a preset is chosen with data/augment=<name>: {', '.join(AUGMENT_PRESETS)})"
            )
        if augment is None or isinstance(augment, Mapping):
            preset = (
                name if name in AUGMENT_PRESETS else "cifar" if self.stats.native_size == 32 else "imagenet"
            )
            with config_keys(AUGMENT_KEYS):
                augment = augment_preset(preset, **(augment or {}))
        global_group = _crop_group("global_crops", global_crops)
        local_group = None if local_crops is None else _crop_group("local_crops", local_crops)
        self.crops = (global_group, local_group, augment)
        with config_keys(AUGMENT_KEYS):  # the per-view probabilities against the number of global crops
            self.train_transform = MultiCropTransform(
                global_group, local_group, augment, self.stats.mean, self.stats.std
            )
        self.eval_transform = eval_transform(
            global_group.size,
            self.stats.mean,
            self.stats.std,
            resize=_eval_resize(global_group.size, self.stats.native_size),
        )
        self.start_epoch = 0  # first epoch of the training loader (Lightning then calls set_epoch)
        self.start_batch = 0  # batches of start_epoch already trained (a run resumed mid-epoch)
        self.train_set: LabelledDataset | None = None
        self.train_images: Tensor | None = None  # data.loader=device: the train split, uint8 (N, 3, H, W)
        self.bank_set: LabelledDataset | Subset | None = None
        self.val_set: LabelledDataset | None = None

    @property
    def n_global(self) -> int:
        return self.train_transform.n_global

    @property
    def n_crops(self) -> int:
        return self.train_transform.n_crops

    @property
    def num_classes(self) -> int:
        """Known per dataset, or counted from the train split's classes (``folder``)."""
        if self.stats.num_classes is not None:
            return self.stats.num_classes
        return len(self.train_split().classes)

    def train_batches(self, world: int) -> int:
        """Training batches per epoch of each of ``world`` processes, which share the train split."""
        per_rank = len(self.train_split()) // world
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def train_split(self) -> LabelledDataset:
        """The training dataset (items ``(crops, label)`` under the torchvision loader), built on first use."""
        self.setup()
        assert self.train_set is not None  # setup() built it
        return self.train_set

    def _build(self, split: str, transform: Any) -> LabelledDataset:
        return build_dataset(
            self.name,
            self.root,
            split,
            transform,
            download=self.download,
            val_fraction=self.val_fraction,
            seed=self.seed,
            class_list=self.class_list,
            skip_corrupt=self.skip_corrupt,
        )

    def prepare_data(self) -> None:
        """Download (rank 0 only, under Lightning) when ``download`` is set."""
        if self.download:
            for split in ("train", "val"):
                self._build(split, None)

    def setup(self, stage: str | None = None) -> None:
        """Build the three datasets once; every stage uses them."""
        if self.train_set is not None:
            return
        train_set = self._build("train", self.train_transform)
        if self.drop_last and len(train_set) < self.batch_size:
            raise ConfigError(
                f"batch_size {self.batch_size} exceeds the {len(train_set)} training "
                f"images of {self.name}; with drop_last=True no batch would be produced"
            )
        if self.loader == "device":
            self.train_images = self._train_images(train_set)
        self.train_set = train_set
        bank = self._build("train", self.eval_transform)
        if self.bank_fraction < 1:
            bank = Subset(bank, stratified_subset(bank.targets, self.bank_fraction, self.seed))
        self.bank_set = bank
        self.val_set = self._build("val", self.eval_transform)

    def _train_images(self, train_set: Any) -> Tensor:
        """The train split as a uint8 CPU tensor, after checking it fits in the training device's free
        memory (a one-line ``ConfigError`` with the sizes otherwise)."""
        from sslib.data.device import check_fits, rank_device, uint8_bytes, uint8_images

        check_fits(self.name, len(train_set), uint8_bytes(train_set), rank_device())
        return uint8_images(train_set)

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader | Iterable:
        """Shuffled multi-crop batches. With torchvision, order and crops depend only on (seed, epoch,
        index), so a resumed run continues exactly (set ``start_epoch`` to the epoch it resumes at and
        ``start_batch`` to the batches of it already trained);
        with DALI (:class:`sslib.data.dali.DaliTrainLoader`) ``start_epoch`` only reseeds; the on-device
        loader (:class:`sslib.data.device.DeviceTrainLoader`) has the torchvision loader's order and
        resumes as exactly."""
        train_set = self.train_split()
        if self.loader == "dali":
            return self._dali_loader()
        if self.loader == "device":
            return self._device_loader()
        sampler = EpochSampler(
            len(train_set),
            seed=self.seed,
            epoch=self.start_epoch,
            skip=self.start_batch * self.batch_size,
        )
        dataset = SeededDataset(train_set, self.seed)
        return self._loader(dataset, sampler=sampler, drop_last=self.drop_last)

    def _device_loader(self) -> Iterable:
        from sslib.data.batch_transform import BatchMultiCrop
        from sslib.data.device import DeviceTrainLoader, training_device

        images, train_set = cast(Tensor, self.train_images), cast(Any, self.train_set)
        self.train_images = images = images.to(training_device())  # moved once, kept for the next fit
        return DeviceTrainLoader(
            images,
            torch.as_tensor(train_set.targets, dtype=torch.int64),
            BatchMultiCrop(*self.crops, self.stats.mean, self.stats.std),
            self.batch_size,
            seed=self.seed,
            epoch=self.start_epoch,
            skip=self.start_batch * self.batch_size,
            drop_last=self.drop_last,
        )

    def _dali_loader(self) -> Iterable:
        from sslib.data.dali import DaliTrainLoader  # imports DALI, which is optional

        global_group, local_group, augment = self.crops
        train_set = self.train_split()
        if not isinstance(train_set, ImageFolder):
            raise ConfigError(f"data.loader=dali reads image folders, not {self.name}")
        return DaliTrainLoader(
            train_set.samples,
            global_group,
            local_group,
            augment,
            self.stats.mean,
            self.stats.std,
            self.batch_size,
            num_threads=self.num_workers,
            seed=self.seed,
            epoch=self.start_epoch,
            rank=rank(),
            world=world_size(),
        )

    def val_dataloader(self) -> list[DataLoader]:
        """``[bank, val]`` in order; with several ranks each loader holds this rank's :func:`shard`
        (the online kNN gathers the features back in rank order, see :mod:`sslib.metrics.online`)."""
        self.setup()
        return [self._loader(self._shard(d), shuffle=False) for d in (self.bank_set, self.val_set)]

    @staticmethod
    def _shard(dataset: LabelledDataset | Subset) -> Dataset:
        world = world_size()
        if world == 1:
            return dataset
        if len(dataset) < world:
            raise ConfigError(f"an evaluation set of {len(dataset)} images cannot be shared by {world} ranks")
        return Subset(dataset, shard(len(dataset), rank(), world))
