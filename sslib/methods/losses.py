"""Losses of the clustering methods: swapped prediction and DeepCluster-v2's cluster prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swapped_prediction_loss(
    targets: list[torch.Tensor], student_logits: list[torch.Tensor], temperature: float
) -> torch.Tensor:
    """Eq. 8 of MIRA (SwAV's swapped prediction), extended to multi-crop as in SwAV and DINO.

    ``targets[v]`` (B, K) are the pseudo-labels of global view v; ``student_logits[c]`` (B, K) the
    student's logits of crop c (global views first). Each view's targets are predicted from every
    *other* crop: the loss is the mean over pairs (v, c != v) of -1/B sum_ij t^v_ij log softmax(s^c / T)_ij.
    Eq. 8 sums its two terms; we average over pairs (SwAV/DINO's convention), a constant factor.
    Computed in float32 under mixed precision.
    """
    log_probs = [F.log_softmax(s.float() / temperature, dim=1) for s in student_logits]
    terms = [
        -(t * log_probs[c]).sum(dim=1).mean()
        for v, t in enumerate(targets)
        for c in range(len(log_probs))
        if c != v
    ]
    return torch.stack(terms).mean()


def cluster_prediction_loss(
    student_logits: list[torch.Tensor], clusters: torch.Tensor, temperature: float
) -> torch.Tensor:
    """DeepCluster-v2's loss: every crop predicts its sample's cluster (SwAV's ``main_deepclusterv2.py``).

    ``student_logits[c]`` (B, K) are the logits of crop c, ``clusters`` (B,) the samples' cluster indices;
    the loss is the mean over crops c and samples i of -log softmax(s^c_i / T)_{y_i}. Samples without a
    cluster (y_i = -1) are left out (a batch of only such samples gives 0). Computed in float32.
    """
    terms = [
        F.cross_entropy(s.float() / temperature, clusters, ignore_index=-1, reduction="sum")
        for s in student_logits
    ]
    n = (clusters >= 0).sum().clamp_min(1) * len(terms)
    return torch.stack(terms).sum() / n
