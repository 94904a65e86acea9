"""The pseudo-labeler interface: teacher logits (B, K) -> targets (B, K) on the simplex, without grad."""

from __future__ import annotations

import torch
from torch import nn

from sslib.errors import ConfigError


class Labeler(nn.Module):
    """Base class of all pseudo-labelers.

    Subclasses implement :meth:`assign`, mapping logits ``(B, K)`` to row-stochastic targets ``(B, K)``
    of the same dtype: float32, or float64 for float64 logits (half-precision logits are cast to float32).
    Batch statistics must be all-reduced (see :mod:`sslib.distributed`) so that N ranks holding B rows
    each return the rows one process returns for the N·B batch. Stateful labelers keep their state in
    buffers so that it is checkpointed.
    """

    def assign(self, logits: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Targets for checked logits; the method a subclass implements.

        Args:
            logits: Detached, finite logits, shape ``(B, K)``, float32 or float64.

        Returns:
            Targets, shape ``(B, K)``, in the dtype of ``logits``, rows summing to 1.
        """
        raise NotImplementedError

    def update(self, logits: torch.Tensor) -> None:
        """Update internal state after ``logits`` were labelled (training mode only). Default: none.

        Args:
            logits: The logits just labelled, shape ``(B, K)`` (all views of a step concatenated).
        """

    @torch.no_grad()
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """Targets for one batch of logits, updating the state in training mode.

        Args:
            logits: Teacher logits, shape ``(B, K)``.

        Returns:
            Targets, shape ``(B, K)``, in float32 (float64 for float64 logits), rows summing to 1.

        Raises:
            ConfigError: If ``logits`` is not a non-empty 2-D tensor of finite values.
        """
        x = check_logits(logits)
        targets = self.assign(x)
        if self.training:
            self.update(x)
        return targets

    @torch.no_grad()
    def label_views(self, views: list[torch.Tensor], check_finite: bool = True) -> list[torch.Tensor]:
        """Targets for several views of the same images, each ``(B, K)``.

        Each view is labelled on its own (the paper's swapped-prediction setting); state is
        updated once from all views together, as DINO updates its centre once per step.

        Args:
            views: The logits of each view, each of shape ``(B, K)``.
            check_finite: Whether to check that the logits are finite. ``False`` leaves out the check,
                which reads a value from the device (on a GPU: waits for the logits); the training step
                does, and guards its loss instead (:class:`sslib.app.callbacks.DivergenceGuard`).

        Returns:
            The targets of each view, each of shape ``(B, K)``, rows summing to 1.

        Raises:
            ConfigError: If a view is not a non-empty 2-D tensor (or, with ``check_finite``, has NaN or
                Inf values).
        """
        xs = [check_logits(v, check_finite) for v in views]
        targets = [self.assign(x) for x in xs]
        if self.training:
            self.update(torch.cat(xs))
        return targets


def check_logits(logits: torch.Tensor, finite: bool = True) -> torch.Tensor:
    """Validate ``logits`` and return them detached, in float32 unless float64.

    Args:
        logits: Logits, shape ``(B, K)``.
        finite: Whether to check that every entry is finite.

    Returns:
        ``logits`` detached, shape ``(B, K)``, float32 (float64 for float64 logits).

    Raises:
        ConfigError: If ``logits`` is not a 2-D tensor, is empty, or (with ``finite``) has NaN or Inf
            values.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"logits must be a 2-D tensor (batch, clusters), got shape {shape}")
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ConfigError(f"logits must be non-empty, got shape {tuple(logits.shape)}")
    x = logits.detach()
    x = x if x.dtype == torch.float64 else x.float()
    # One reduction is the fast path; the elementwise check (several passes) runs only when the sum is
    # not finite, which NaN/Inf entries guarantee (finite values can overflow the sum, hence the check).
    if finite and not torch.isfinite(x.sum()) and not torch.isfinite(x).all():
        raise ConfigError("logits must be finite, got NaN or Inf values")
    return x
