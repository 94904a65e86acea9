"""Run a function on 2 gloo processes on the CPU and collect what each rank returns."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, fn: Callable[[int], dict], port: int, result_dir: str, world: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        torch.save(fn(rank), os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def run_on_ranks(fn: Callable[[int], dict], result_dir: Path, world: int = 2) -> list[dict]:
    """``[fn(0), ..., fn(world - 1)]``, each called in its own process of one gloo process group.

    ``fn`` must be a module-level function (it is pickled) returning tensors (saved with ``torch.save``).
    """
    mp.spawn(_worker, args=(fn, free_port(), str(result_dir), world), nprocs=world, join=True)
    return [torch.load(Path(result_dir) / f"rank{r}.pt", weights_only=True) for r in range(world)]
