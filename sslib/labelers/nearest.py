"""Hard targets: the nearest prototype, DeepCluster-v2's pseudo-labels (Caron et al., NeurIPS 2020)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslib.labelers.base import Labeler
from sslib.labelers.registry import register


@register("nearest")
class NearestPrototypeLabeler(Labeler):
    """Hard targets: the one-hot of argmax_j logits_ij, i.e. the nearest prototype under cosine similarity.

    With k-means centroids as the prototypes (``method=deepclusterv2``) this is the nearest centroid;
    on another method's teacher logits (``method=mira labeler=nearest``) it is a hard-assignment ablation.
    Stateless and row-wise, so it needs no all-reduce.
    """

    def __init__(self) -> None:  # explicit, so that build() rejects any argument with a one-line error
        super().__init__()

    def assign(self, logits: torch.Tensor) -> torch.Tensor:
        """One-hot targets of the row-wise argmax.

        Args:
            logits: Logits, shape ``(B, K)``.

        Returns:
            One-hot targets, shape ``(B, K)``, in the dtype of ``logits``.
        """
        return F.one_hot(logits.argmax(dim=1), logits.shape[1]).to(logits.dtype)
