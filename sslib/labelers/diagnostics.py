"""Monitoring statistics of pseudo-labels: the terms of the MI estimate (Eq. 2) and cluster usage."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from sslib.distributed import all_reduce, global_batch_size


@dataclass(frozen=True)
class LabelStats:
    """Statistics of targets W (B, K) over the global batch, entropies in nats."""

    marginal_entropy: float  # H(Y) = -sum_j wbar_j log wbar_j
    conditional_entropy: float  # H(Y|B) = -1/B sum_ij w_ij log w_ij
    mutual_information: float  # I(Y; B) = H(Y) - H(Y|B), Eq. 2
    clusters_used: int  # clusters that are the argmax of at least one sample
    n_clusters: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in asdict(self).items()}


@torch.no_grad()
def label_stats(targets: torch.Tensor) -> LabelStats:
    """Eq. 2's entropy terms and cluster usage of ``targets`` (B, K), all-reduced across ranks."""
    w = targets.detach().float()
    n = global_batch_size(w.shape[0], w.device)
    w_bar = all_reduce(w.sum(dim=0)) / n
    h_y = -torch.special.xlogy(w_bar, w_bar).sum()
    h_y_given_b = -all_reduce(torch.special.xlogy(w, w).sum()) / n
    counts = all_reduce(torch.bincount(w.argmax(dim=1), minlength=w.shape[1]))
    return LabelStats(
        marginal_entropy=h_y.item(),
        conditional_entropy=h_y_given_b.item(),
        mutual_information=(h_y - h_y_given_b).item(),
        clusters_used=int((counts > 0).sum().item()),
        n_clusters=w.shape[1],
    )
