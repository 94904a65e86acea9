"""Pluggable pseudo-labelers: teacher logits (B, K) -> targets (B, K) on the simplex.

>>> import torch, sslib.labelers as L
>>> L.available()
['dino', 'kmeans', 'mira', 'sinkhorn']
>>> targets = L.build("mira", temperature=0.225, beta=2 / 3, n_iters=30)(torch.randn(8, 10))
>>> targets.shape, bool(torch.allclose(targets.sum(1), torch.ones(8)))
(torch.Size([8, 10]), True)
"""

from sslib.labelers import dino, kmeans, mira, sinkhorn  # noqa: F401  (registers the built-in labelers)
from sslib.labelers.base import Labeler
from sslib.labelers.diagnostics import LabelStats, label_statistics, label_stats
from sslib.labelers.dino import DINOLabeler
from sslib.labelers.kmeans import KMeansLabeler, spherical_kmeans
from sslib.labelers.mira import MIRALabeler, mira_targets
from sslib.labelers.registry import LABELERS, available, build, register
from sslib.labelers.sinkhorn import SinkhornLabeler, sinkhorn_targets

__all__ = [
    "LABELERS",
    "DINOLabeler",
    "KMeansLabeler",
    "LabelStats",
    "Labeler",
    "MIRALabeler",
    "SinkhornLabeler",
    "available",
    "build",
    "label_statistics",
    "label_stats",
    "mira_targets",
    "register",
    "sinkhorn_targets",
    "spherical_kmeans",
]
