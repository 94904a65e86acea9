"""Reproducible training order and augmentation: functions of (seed, epoch, index) only.

A resumed run therefore sees exactly the batches and crops the uninterrupted run would have seen,
whatever the number of workers. Under ``torch.distributed`` each rank takes its own slice of the
epoch's permutation (as ``DistributedSampler`` does).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

from sslib.errors import ConfigError


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(epoch, index)`` over a seeded permutation of ``range(n)``, sliced per rank.

    Lightning calls :meth:`set_epoch` at every epoch start. The permutation depends only on
    ``(seed, epoch)``; rank ``r`` of ``world`` takes its entries ``r, r + world, r + 2 world, ...`` up to
    the last ``n % world``, which are dropped, so the ranks' shards are disjoint, cover the rest, and
    hold ``n // world`` indices each (every rank then has the same number of batches).

    Args:
        n: The dataset's length.
        seed: Seeds the permutations.
        epoch: The first epoch.
        skip: The first ``skip`` entries of this rank's shard are left out in epoch ``epoch`` only: a run
            resumed after ``k`` batches of an epoch passes ``skip = k * batch_size`` and sees exactly the
            remaining batches. The length stays that of the whole shard (Lightning counts the epoch's
            batches from it and continues its batch counter at ``k``).

    Raises:
        ConfigError: If ``skip`` is negative.
    """

    def __init__(self, n: int, seed: int = 0, epoch: int = 0, skip: int = 0) -> None:
        if skip < 0:
            raise ConfigError(f"skip must be >= 0, got {skip}")
        self.n, self.seed, self.epoch, self.skip = n, seed, epoch, skip

    def set_epoch(self, epoch: int) -> None:
        """Iterate over epoch ``epoch`` next; a new epoch leaves nothing out (``skip`` is reset).

        Args:
            epoch: The epoch.
        """
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // _rank_and_world()[1]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = _rank_and_world()
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator)[: len(self) * world]
        epoch = self.epoch
        return ((epoch, int(i)) for i in order[rank::world][self.skip :])


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(epoch, index)`` is transformed under a seed of its own.

    Items of the wrapped dataset are tuples (``(sample, target)``, torchvision's convention); the
    wrapper appends the index, ``(sample, target, index)``, for methods that keep per-sample state
    (DeepCluster-v2's memory bank). The global torch RNG is forked around each item, so training code
    in the same process is unaffected (``num_workers=0``).

    Args:
        dataset: A map-style dataset whose items are tuples.
        seed: Seeds every item's transform with ``(seed, epoch, index)``.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        with torch.random.fork_rng(devices=[]):
            # Only the CPU generator: torch.manual_seed would also seed every accelerator (~0.4 ms an item).
            torch.default_generator.manual_seed(hash((self.seed, epoch, index)) & 0x7FFF_FFFF_FFFF_FFFF)
            return (*self.dataset[index], index)
