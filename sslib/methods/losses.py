"""Losses shared by the clustering methods."""

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
