"""DINO centering and sharpening (Caron et al., ICCV 2021, §3.1)."""

from __future__ import annotations

import torch

from sslib.distributed import all_reduce, global_batch_size
from sslib.errors import ConfigError
from sslib.labelers.base import Labeler
from sslib.labelers.registry import register
from sslib.validation import Checked, check_int_at_least, check_positive, check_unit_interval


@register("dino")
class DINOLabeler(Labeler):
    """DINO's targets softmax((t - c) / tau), the centre c an EMA of the global batch mean of t.

    The centre c ``(1, K)`` is a buffer (saved in checkpoints) and is updated *after* it is used, in
    training mode only: c <- m c + (1 - m) mean_i t_i, the mean taken over all ranks and all views
    passed to :meth:`label_views`.

    Args:
        temperature: The teacher temperature tau, > 0; may be changed during training (DINO's warm-up).
        center_momentum: The centre's EMA momentum m, in [0, 1].
        num_prototypes: The number of prototypes K, the width of the centre.

    Raises:
        ConfigError: If an argument is out of its range.
    """

    center: torch.Tensor
    temperature = Checked(check_positive)

    def __init__(self, temperature: float = 0.04, center_momentum: float = 0.9, num_prototypes: int = 3000):
        super().__init__()
        self.temperature = temperature
        self.center_momentum = check_unit_interval("center_momentum", center_momentum, closed_right=True)
        self.register_buffer(
            "center", torch.zeros(1, check_int_at_least("num_prototypes", num_prototypes, 1))
        )

    def assign(self, logits: torch.Tensor) -> torch.Tensor:
        """Centred and sharpened targets softmax((t - c) / tau).

        Args:
            logits: Teacher logits t, shape ``(B, K)``.

        Returns:
            Targets, shape ``(B, K)``, rows summing to 1.

        Raises:
            ConfigError: If ``logits`` does not have ``num_prototypes`` columns.
        """
        if logits.shape[1] != self.center.shape[1]:
            raise ConfigError(
                f"dino labeler has num_prototypes={self.center.shape[1]}, got logits with {logits.shape[1]} columns"
            )
        return torch.softmax((logits - self.center) / self.temperature, dim=1)

    def update(self, logits: torch.Tensor) -> None:
        """Move the centre towards the mean of ``logits`` over the global batch.

        Args:
            logits: The logits just labelled, shape ``(B, K)``.
        """
        n = global_batch_size(logits.shape[0], logits.device)
        batch_mean = all_reduce(logits.sum(dim=0, keepdim=True)) / n
        self.center.mul_(self.center_momentum).add_(
            batch_mean.to(self.center.dtype), alpha=1 - self.center_momentum
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, center_momentum={self.center_momentum}"
