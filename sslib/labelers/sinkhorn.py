"""Sinkhorn-Knopp equipartition assignment as in SwAV (Caron et al., NeurIPS 2020, §3.1)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sslib.distributed import all_reduce
from sslib.labelers.base import Labeler
from sslib.labelers.registry import register
from sslib.validation import check_int_at_least, check_positive


def sinkhorn_targets(
    logits: torch.Tensor,
    epsilon: float,
    n_iters: int,
    callback: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp on Q = exp(logits / epsilon).

    Each iteration normalises every prototype (column) to total mass 1/K over the global batch,
    then every sample (row) to 1/B; the result is scaled by B so rows sum to 1. Constant factors
    cancel between the two normalisations, so this log-domain form (column log-sum-exp across
    ranks, then a row log-softmax) is exactly SwAV's iteration and cannot overflow.

    Args:
        logits: Float32 logits, shape ``(B, K)``.
        epsilon: The entropic regularisation epsilon, > 0.
        n_iters: The number of Sinkhorn-Knopp iterations.
        callback: Called as ``callback(n, Q_n)`` after each iteration.

    Returns:
        The codes Q, shape ``(B, K)``, rows summing to 1.
    """
    log_q = logits * (1.0 / epsilon)
    for it in range(n_iters):
        log_q.sub_(_global_column_logsumexp(log_q))
        log_q.sub_(log_q.logsumexp(dim=1, keepdim=True))
        if callback is not None:
            callback(it + 1, log_q.exp())
    return log_q.exp_()


def _global_column_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """log sum_i exp(x_ij) over the rows of all ranks, (1, K)."""
    peak = all_reduce(x.max(dim=0, keepdim=True).values, op="max")
    return peak + all_reduce((x - peak).exp_().sum(dim=0, keepdim=True)).log()


@register("sinkhorn")
class SinkhornLabeler(Labeler):
    """SwAV's equipartitioned soft codes (:func:`sinkhorn_targets`).

    Args:
        epsilon: The entropic regularisation epsilon, > 0 (paper: 0.05).
        n_iters: The number of Sinkhorn-Knopp iterations, >= 1 (paper: 3).

    Raises:
        ConfigError: If an argument is out of its range.
    """

    def __init__(self, epsilon: float = 0.05, n_iters: int = 3) -> None:
        super().__init__()
        self.epsilon = check_positive("epsilon", epsilon)
        self.n_iters = check_int_at_least("n_iters", n_iters, 1)

    def assign(self, logits: torch.Tensor) -> torch.Tensor:
        """The Sinkhorn-Knopp codes of ``logits`` (:func:`sinkhorn_targets`).

        Args:
            logits: Teacher logits, shape ``(B, K)``.

        Returns:
            Codes, shape ``(B, K)``, rows summing to 1.
        """
        return sinkhorn_targets(logits, self.epsilon, self.n_iters)

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, n_iters={self.n_iters}"
