"""Monitoring statistics of pseudo-labels: the terms of the MI estimate (Eq. 2) and cluster usage."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sslib.distributed import all_reduce


@dataclass(frozen=True)
class LabelStats:
    """Statistics of targets W (B, K) over the global batch, entropies in nats.

    Args:
        marginal_entropy: H(Y) = -sum_j wbar_j log wbar_j.
        conditional_entropy: H(Y|B) = -1/B sum_ij w_ij log w_ij.
        mutual_information: I(Y; B) = H(Y) - H(Y|B), Eq. 2.
        clusters_used: Clusters that are the argmax of at least one sample.
        n_clusters: The number of clusters K.
    """

    marginal_entropy: float  # H(Y) = -sum_j wbar_j log wbar_j
    conditional_entropy: float  # H(Y|B) = -1/B sum_ij w_ij log w_ij
    mutual_information: float  # I(Y; B) = H(Y) - H(Y|B), Eq. 2
    clusters_used: int  # clusters that are the argmax of at least one sample
    n_clusters: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """The statistics as floats, keyed by field name.

        Args:
            prefix: Prepended to every key, e.g. ``"labels/"``.

        Returns:
            ``{prefix + field: value}`` for every field.
        """
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


@torch.no_grad()
def label_stats_tensors(targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eq. 2's entropy terms and cluster usage of ``targets``, all-reduced across ranks, as 0-d tensors.

    The tensors stay on ``targets``' device: nothing is read back to the host, so a training step that
    logs them does not wait for the device.

    Args:
        targets: Targets W, shape ``(B, K)``, rows on the simplex.

    Returns:
        0-d tensors keyed as the fields of :class:`LabelStats`, without ``n_clusters``.
    """
    w = targets.detach().float()
    # the global batch, filled on the device (new_tensor would copy from the host and wait for a GPU)
    n = all_reduce(torch.full((), float(w.shape[0]), dtype=w.dtype, device=w.device))
    w_bar = all_reduce(w.sum(dim=0)) / n
    h_y = -torch.special.xlogy(w_bar, w_bar).sum()
    h_y_given_b = -all_reduce(torch.special.xlogy(w, w).sum()) / n
    top = w.argmax(dim=1)  # scatter_add, not bincount, which reads the largest index back on a GPU
    counts = all_reduce(w.new_zeros(w.shape[1]).scatter_add_(0, top, torch.ones_like(w[:, 0])))
    return {
        "marginal_entropy": h_y,
        "conditional_entropy": h_y_given_b,
        "mutual_information": h_y - h_y_given_b,
        "clusters_used": (counts > 0).sum().to(w.dtype),  # a float, as logged
    }


def label_stats(targets: torch.Tensor) -> LabelStats:
    """:func:`label_stats_tensors` of ``targets`` as Python numbers.

    Args:
        targets: Targets W, shape ``(B, K)``, rows on the simplex.

    Returns:
        The statistics over the global batch.
    """
    stats = label_stats_tensors(targets)
    return LabelStats(
        marginal_entropy=stats["marginal_entropy"].item(),
        conditional_entropy=stats["conditional_entropy"].item(),
        mutual_information=stats["mutual_information"].item(),
        clusters_used=int(stats["clusters_used"].item()),
        n_clusters=targets.shape[1],
    )
