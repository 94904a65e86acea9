"""Collectives that are the identity in a single process, so labelers run unchanged with or without DDP."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Number of processes in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if world_size() > 1 else 0


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over all ranks with ``op`` in {"sum", "max"} and return it."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every rank (the same shape on all) concatenated along dim 0 in rank order."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def global_batch_size(local: int, device: torch.device) -> int:
    """Sum of the per-rank batch sizes (ranks may hold different numbers of rows)."""
    if world_size() == 1:
        return local
    return int(all_reduce(torch.tensor([local], device=device, dtype=torch.long)).item())
