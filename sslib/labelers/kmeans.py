"""Spherical k-means, which makes DeepCluster-v2's prototypes (Caron et al., NeurIPS 2020); its labeler is
:class:`sslib.labelers.nearest.NearestPrototypeLabeler`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslib.distributed import all_reduce

E_STEP_ROWS = 16384  # rows scored at once in the assignment step, which bounds its (rows, K) buffer


def nearest_centroid(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The most similar centroid of each row, argmax_k <x_i, c_k>, scored in chunks of rows.

    Args:
        x: Rows, shape ``(M, d)``.
        centroids: Centroids, shape ``(K, d)``.

    Returns:
        The centroid index of each row, shape ``(M,)``.
    """
    return torch.cat([(chunk @ centroids.t()).argmax(dim=1) for chunk in x.split(E_STEP_ROWS)])


@torch.no_grad()
def spherical_kmeans(x: torch.Tensor, centroids: torch.Tensor, n_iters: int) -> torch.Tensor:
    """Lloyd's k-means under cosine similarity: ``n_iters`` (assign, update) rounds.

    Computed in float32 (float64 for float64 rows). Each round assigns every row to its most similar
    centroid, then sets c_k = normalise(sum of its rows) (SwAV's ``cluster_memory``: the normalised
    mean); a cluster without rows keeps its centroid. The sums and counts are all-reduced, so ranks
    holding disjoint shards of the rows get the centroids of their union.

    Args:
        x: Unit rows, shape ``(M, d)``.
        centroids: Unit initial centroids, shape ``(K, d)``.
        n_iters: Number of (assign, update) rounds.

    Returns:
        The centroids, shape ``(K, d)``, float32 (float64 for float64 rows).
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # float32 unless float64
    x, c = x.to(dtype), centroids.to(dtype).clone()
    for _ in range(n_iters):
        labels = nearest_centroid(x, c)
        sums = all_reduce(torch.zeros_like(c).index_add_(0, labels, x))
        counts = all_reduce(torch.bincount(labels, minlength=c.shape[0]))
        used = counts > 0
        c[used] = F.normalize(sums[used], dim=1)
    return c
