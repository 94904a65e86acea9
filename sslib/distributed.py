"""Collectives that are the identity in a single process, so labelers run unchanged with or without DDP,
and a synchronised BatchNorm that also runs on the CPU."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from sslib.errors import ConfigError


def world_size() -> int:
    """Number of processes in the default group (1 when torch.distributed is not initialised)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 when torch.distributed is not initialised)."""
    return dist.get_rank() if world_size() > 1 else 0


def launched_processes() -> int:
    """How many processes a launcher started for this command.

    Returns:
        torchrun's (and Lightning's) ``WORLD_SIZE``, else SLURM's ``SLURM_STEP_NUM_TASKS`` (set by
        ``srun``), else 1.
    """
    for name in ("WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def require_one_process(tools: str, device_hint: str = "--device") -> None:
    """Refuse to run ``tools``, which run in one process, when they were started as several.

    Args:
        tools: What runs, in the plural, for the message (e.g. ``"the evaluation tools"``).
        device_hint: The option that chooses their device, for the message.

    Raises:
        ConfigError: If a launcher started more than one process (:func:`launched_processes`).
    """
    count = launched_processes()
    if count > 1:
        raise ConfigError(
            f"{tools} run in one process on one device but were started as {count} processes "
            f"(torchrun or srun); start them with python (choose the device with {device_hint})"
        )


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``tensor`` in place over all ranks (the identity in a single process).

    Args:
        tensor: The tensor, the same shape on every rank.
        op: ``"sum"`` or ``"max"``.

    Returns:
        ``tensor``, reduced.
    """
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` of every rank concatenated along dim 0 in rank order.

    Args:
        tensor: This rank's rows, shape ``(n, ...)``, the same on every rank.

    Returns:
        All ranks' rows, shape ``(world_size * n, ...)``; ``tensor`` itself in a single process.
    """
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def global_batch_size(local: int, device: torch.device) -> int:
    """Sum of the per-rank batch sizes (ranks may hold different numbers of rows).

    Args:
        local: This rank's batch size.
        device: The device of the collective (the process group's).

    Returns:
        The global batch size.
    """
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

    Args:
        tensor: This rank's rows, shape ``(n, ...)``, the same on every rank.

    Returns:
        All ranks' rows, shape ``(world_size * n, ...)``.
    """
    return tensor if world_size() == 1 else _AllGatherWithGrad.apply(tensor)


def all_reduce_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over ranks (a new tensor), differentiable: the backward all-reduces gradients.

    When every rank computes the same loss L from such sums (Barlow Twins' global statistics), each
    rank's gradient is world_size x dL/d(its rows), which DDP's averaging turns into dL/d(parameters).

    Args:
        tensor: This rank's tensor, the same shape on every rank.

    Returns:
        The sum over ranks, the shape of ``tensor``; ``tensor`` itself in a single process.
    """
    return tensor if world_size() == 1 else _AllReduceWithGrad.apply(tensor)


class AllReduceBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch of all CPU processes (gloo), which torch's SyncBatchNorm refuses.

    In training under ``torch.distributed`` the statistics of the ``n = sum_r n_r`` values per channel
    come from two differentiable all-reduces, ``mean = sum(x) / n`` and ``var = sum((x - mean)^2) / n``;
    the running statistics get ``var * n / (n - 1)``, as torch's SyncBatchNorm does on GPUs. The backward
    all-reduces the gradients of both sums (:func:`all_reduce_with_grad`), so once DDP has averaged the
    ranks' gradients they are those of one process on the whole batch. Otherwise it is a plain BatchNorm.
    Any input of 2 or more dimensions, channels in dim 1.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ConfigError(f"expected an input of 2 or more dimensions (N, C, ...), got {input.dim()}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise ``input`` with the statistics of the global batch (training, distributed) or as
        a plain BatchNorm.

        Args:
            input: Values, shape ``(N, C, ...)``.

        Returns:
            The normalised values, the shape of ``input``.

        Raises:
            ConfigError: If ``input`` has fewer than 2 dimensions.
        """
        if not (self.training and world_size() > 1):
            return super().forward(input)
        self._check_input_dim(input)
        dims = [d for d in range(input.dim()) if d != 1]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = float(all_reduce(torch.tensor([input.numel() // input.shape[1]])).item())
        mean = all_reduce_with_grad(input.sum(dims)) / count
        centred = input - mean.view(shape)
        var = all_reduce_with_grad(centred.pow(2).sum(dims)) / count
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * count / max(count - 1, 1))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        running_mean, running_var, batches = self.running_mean, self.running_var, self.num_batches_tracked
        if running_mean is None or running_var is None or batches is None:
            raise RuntimeError("running statistics are updated only with track_running_stats=True")
        batches.add_(1)
        factor = 1.0 / float(batches) if self.momentum is None else self.momentum
        running_mean.lerp_(mean.to(running_mean.dtype), factor)
        running_var.lerp_(var.to(running_var.dtype), factor)


def convert_batchnorm(
    module: nn.Module, target: type[nn.modules.batchnorm._BatchNorm] = AllReduceBatchNorm
) -> nn.Module:
    """``module`` with every BatchNorm layer not already of class ``target`` replaced by one of ``target``.

    Parameters are shared and running statistics kept.

    Args:
        module: The module to convert; its children are replaced in place.
        target: The BatchNorm class to convert to.

    Returns:
        The converted module (a new one if ``module`` itself is a BatchNorm layer).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and type(module) is not target:
        converted = target(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(converted, name, getattr(module, name))
        converted.train(module.training)
        module = converted
    for name, child in list(module.named_children()):
        module.add_module(name, convert_batchnorm(child, target))
    return module
