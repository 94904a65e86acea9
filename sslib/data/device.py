"""On-device training loader (``data.loader=device``): the train split held as one uint8 tensor on the
training device, every batch's crops made there by :class:`~sslib.data.batch_transform.BatchMultiCrop`.

Order and sharding are the torchvision loader's (:class:`~sslib.data.sampling.EpochSampler`, the same
batches of the same samples), and each crop is a function of (seed, epoch, index), so a run resumed
mid-epoch (``skip``) sees exactly the remaining batches and crops. The split must fit in the device's
free memory (:func:`check_fits`) and its images must share one size.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as F

from sslib.data.batch_transform import BatchMultiCrop
from sslib.data.folder import load_image
from sslib.data.sampling import EpochSampler
from sslib.errors import ConfigError
from sslib.nonblocking import to_device

GIB = 2**30


def training_device() -> torch.device:
    """The current CUDA device when CUDA is available (Lightning sets it per rank), else the CPU."""
    return (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )


def rank_device() -> torch.device:
    """The device this process will train on, known before Lightning sets it: CUDA device
    ``LOCAL_RANK`` (the launcher's, 0 without one) when it exists, else :func:`training_device`.
    Asking another device's free memory would open a CUDA context there for the process's lifetime."""
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        return torch.device("cuda", local)
    return training_device()


def free_bytes(device: torch.device) -> int:
    """Free memory of ``device``: ``torch.cuda.mem_get_info`` on CUDA; on the CPU the available RAM
    (``MemAvailable`` of ``/proc/meminfo``, else the free pages)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(name: str | None, n: int, nbytes: int, device: torch.device, free: int | None = None) -> None:
    """A one-line ``ConfigError`` when ``nbytes`` (the ``n`` uint8 images of dataset ``name``) exceed the
    ``free`` bytes of ``device`` (default: :func:`free_bytes`)."""
    free = free_bytes(device) if free is None else free
    if nbytes > free:
        raise ConfigError(
            f"data.loader=device: the {n} training images of {name} take {nbytes / GIB:.2f} GiB as uint8, "
            f"more than the {free / GIB:.2f} GiB free on {device}; use data.loader=torchvision"
        )


def _folder_shape(samples: list[tuple[str, int]]) -> tuple[int, int]:
    """(height, width) shared by the images ``samples`` (read from their headers); another size is a
    one-line ``ConfigError`` naming the file."""
    sizes: dict[tuple[int, int], str] = {}
    for path, _ in samples:
        with Image.open(path) as image:
            sizes.setdefault(image.size, path)
        if len(sizes) > 1:
            (first, first_path), (other, other_path) = sizes.items()
            raise ConfigError(
                f"data.loader=device needs images of one size: {other_path} is {other[0]}x{other[1]}, "
                f"{first_path} is {first[0]}x{first[1]}; use data.loader=torchvision"
            )
    width, height = next(iter(sizes))
    return height, width


def uint8_bytes(dataset: Any) -> int:
    """Bytes of the train split ``dataset`` as a uint8 (N, 3, H, W) tensor, without decoding it."""
    if hasattr(dataset, "images"):  # DigitsDataset: already a uint8 (N, 3, H, W) tensor
        return dataset.images.numel()
    if isinstance(getattr(dataset, "data", None), np.ndarray):  # torchvision CIFAR: uint8 (N, H, W, 3)
        return dataset.data.size
    height, width = _folder_shape(dataset.samples)
    return len(dataset.samples) * 3 * height * width


def uint8_images(dataset: Any) -> Tensor:
    """The train split ``dataset`` (digits, CIFAR or an image folder) as a uint8 (N, 3, H, W) CPU tensor."""
    if hasattr(dataset, "images"):
        return dataset.images
    if isinstance(getattr(dataset, "data", None), np.ndarray):
        return torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    _folder_shape(dataset.samples)
    return torch.stack([F.pil_to_tensor(load_image(path)) for path, _ in dataset.samples])


def split_over_threads(
    pool: ThreadPoolExecutor, parts: int, views: Callable[[Tensor], list[Tensor]], index: Tensor
) -> list[Tensor]:
    """``views(index)`` made as ``parts`` calls on consecutive parts of ``index`` (B,) in ``pool``'s
    threads, torch limited to one intra-op thread meanwhile: each view's parts concatenated."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return [torch.cat(view) for view in zip(*pool.map(views, index.tensor_split(parts)), strict=True)]
    finally:
        torch.set_num_threads(threads)


class DeviceTrainLoader:
    """Training batches ``(crops, labels, indices)`` made on the images' device, for Lightning.

    ``images`` uint8 (N, 3, H, W) on the device the crops are made on; ``targets`` (N,) int64. Each
    batch takes the next ``batch_size`` ``(epoch, index)`` pairs of :attr:`sampler` (an
    ``EpochSampler``: Lightning calls its ``set_epoch``), so batches are those of the torchvision loader;
    ``crops`` are ``transform``'s float32 (B, 3, S, S) views on the images' device, ``labels`` and
    ``indices`` int64 (B,) on the CPU. ``len()`` counts the batches of a whole epoch of this rank.

    On the CPU a batch is split into ``threads`` parts (default: torch's intra-op threads) augmented in
    parallel Python threads, each op on one core: on 32x32 images the ops are too small for torch's
    own threading, which then costs more than it gains. Every sample's crops are the same either way.
    """

    def __init__(
        self,
        images: Tensor,
        targets: Tensor,
        transform: BatchMultiCrop,
        batch_size: int,
        seed: int = 0,
        epoch: int = 0,
        skip: int = 0,
        drop_last: bool = True,
        threads: int | None = None,
    ) -> None:
        self.images, self.targets, self.transform = images, targets, transform
        self.threads = 1 if images.device.type != "cpu" else threads or torch.get_num_threads()
        self.batch_size, self.seed, self.drop_last = batch_size, seed, drop_last
        self.sampler = EpochSampler(len(images), seed=seed, epoch=epoch, skip=skip)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _crops(self, pool: ThreadPoolExecutor, epoch: int, index: Tensor) -> list[Tensor]:
        """The views of samples ``index`` (B,) of epoch ``epoch`` (on the CPU), made on the images'
        device."""

        def views(part: Tensor) -> list[Tensor]:
            images = self.images[to_device(part, self.images.device)]
            return self.transform(images, self.seed, epoch, part)

        return views(index) if self.threads == 1 else split_over_threads(pool, self.threads, views, index)

    def __iter__(self) -> Iterator[tuple[list[Tensor], Tensor, Tensor]]:
        keys = list(self.sampler)
        stop = len(keys) - len(keys) % self.batch_size if self.drop_last else len(keys)
        with ThreadPoolExecutor(self.threads) as pool:
            for start in range(0, stop, self.batch_size):
                batch = keys[start : start + self.batch_size]
                index = torch.tensor([i for _, i in batch], dtype=torch.int64)
                labels = self.targets[index]
                if self.images.is_cuda:  # Lightning's copy to the GPU then does not wait for its queue
                    labels, index = labels.pin_memory(), index.pin_memory()
                yield self._crops(pool, batch[0][0], index), labels, index
