"""Losses of the clustering methods: swapped prediction and DeepCluster-v2's cluster prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslib.errors import ConfigError
from sslib.validation import check_positive


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(logits / T)`` over dim 1, in float32 for half-precision logits (float64 stays float64)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=1)


def swapped_prediction_loss(
    targets: list[torch.Tensor], student_logits: list[torch.Tensor], temperature: float
) -> torch.Tensor:
    """Eq. 8 of MIRA (SwAV's swapped prediction), extended to multi-crop as in SwAV and DINO.

    ``targets[v]`` (B, K) are the pseudo-labels of global view v; ``student_logits[c]`` (B, K) the
    student's logits of crop c (global views first). Each view's targets are predicted from every
    *other* crop:

        L = 1/|P| sum_{(v, c) in P} -1/B sum_ij t^v_ij log softmax(s^c_i / T)_j,  P = {(v, c): c != v}.

    Every view has the same number of other crops, so this equals the official codes' mean over views
    of the mean over the other crops (MIRA ``train.py`` lines 126-155, SwAV ``main_swav.py`` lines
    310-315, DINO ``main_dino.py`` lines 392-402). Eq. 8 sums its two terms: with two crops, L is
    Eq. 8 / 2. Half-precision logits are computed in float32.
    """
    check_positive("temperature", temperature)
    n_views, n_crops = len(targets), len(student_logits)
    if not 1 <= n_views <= n_crops or n_crops < 2:
        raise ConfigError(
            "swapped prediction needs 1 <= target views <= crops and at least 2 crops, "
            f"got {n_views} target views and {n_crops} crops"
        )
    shapes = {tuple(x.shape) for x in (*targets, *student_logits)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ConfigError(
            f"targets and student logits must all be (B, K) of one shape, got shapes {sorted(shapes)}"
        )
    log_probs = [_log_probs(s, temperature) for s in student_logits]
    terms = [
        -(t * log_probs[c]).sum(dim=1).mean() for v, t in enumerate(targets) for c in range(n_crops) if c != v
    ]
    return torch.stack(terms).mean()


def cluster_prediction_loss(
    student_logits: list[torch.Tensor], clusters: torch.Tensor, temperature: float
) -> torch.Tensor:
    """DeepCluster-v2's loss: every crop predicts its sample's cluster.

    ``student_logits[c]`` (B, K) are the logits of crop c, ``clusters`` (B,) the samples' cluster indices;
    the loss is the mean over crops c and samples i of -log softmax(s^c_i / T)_{y_i}, as SwAV's
    ``main_deepclusterv2.py`` (lines 270-276: one cross-entropy over all crops' rows). Samples without a
    cluster (y_i = -1) are left out of the sum and the count (a batch of only such samples gives 0).
    Half-precision logits are computed in float32.
    """
    check_positive("temperature", temperature)
    if (
        not student_logits
        or clusters.dim() != 1
        or any(s.dim() != 2 or len(s) != len(clusters) for s in student_logits)
    ):
        raise ConfigError(
            f"clusters must be (B,) and each of >= 1 crops' logits (B, K), got clusters {tuple(clusters.shape)} and "
            f"logits {[tuple(s.shape) for s in student_logits]}"
        )
    terms = [
        F.nll_loss(_log_probs(s, temperature), clusters, ignore_index=-1, reduction="sum")
        for s in student_logits
    ]
    n = (clusters >= 0).sum().clamp_min(1) * len(terms)
    return torch.stack(terms).sum() / n
