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


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: :func:`all_gather`. Backward: the gradients of every rank summed, this rank's rows kept."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = tensor.shape[0]
        return all_gather(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = all_reduce(grad.contiguous().clone())
        return grad[rank() * ctx.rows : (rank() + 1) * ctx.rows]


class _AllReduceWithGrad(torch.autograd.Function):
    """Forward: the sum over ranks. Backward: the gradients of every rank summed (d sum / d x_r = 1)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        return all_reduce(tensor.clone())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return all_reduce(grad.contiguous().clone())


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """:func:`all_gather` (same shape on every rank) through which gradients flow back to each rank's rows.

    A loss computed on every rank from the gathered rows gives each rank the gradient of the sum of all
    ranks' losses with respect to its own rows; DDP's gradient averaging then gives the gradient of the
    ranks' mean loss, i.e. of the loss of one process on the whole batch (SimCLR's negatives).
    """
    return tensor if world_size() == 1 else _AllGatherWithGrad.apply(tensor)


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a new tensor), differentiable: the backward all-reduces gradients.

    When every rank computes the same loss L from such sums (Barlow Twins' global statistics), each
    rank's gradient is world_size x dL/d(its rows), which DDP's averaging turns into dL/d(parameters).
    """
    return tensor if world_size() == 1 else _AllReduceWithGrad.apply(tensor)
