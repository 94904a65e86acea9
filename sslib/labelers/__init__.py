"""Pluggable pseudo-labelers: teacher logits (B, K) -> targets (B, K) on the simplex.

>>> import torch, sslib.labelers as L
>>> L.available()
['dino', 'mira', 'nearest', 'sinkhorn']
>>> targets = L.build("mira", temperature=0.225, beta=2 / 3, n_iters=30)(torch.randn(8, 10))
>>> targets.shape, bool(torch.allclose(targets.sum(1), torch.ones(8)))
(torch.Size([8, 10]), True)
"""

from sslib.labelers import dino, mira, nearest, sinkhorn  # noqa: F401  (registers the built-in labelers)
from sslib.labelers.base import Labeler
from sslib.labelers.diagnostics import LabelStats, label_stats, label_stats_tensors
from sslib.labelers.dino import DINOLabeler
from sslib.labelers.kmeans import spherical_kmeans
from sslib.labelers.mira import MIRALabeler, mira_targets
from sslib.labelers.nearest import NearestPrototypeLabeler
from sslib.labelers.registry import LABELERS, available, build, register
from sslib.labelers.sinkhorn import SinkhornLabeler, sinkhorn_targets

__all__ = [
    "LABELERS",
    "DINOLabeler",
    "LabelStats",
    "Labeler",
    "MIRALabeler",
    "NearestPrototypeLabeler",
    "SinkhornLabeler",
    "available",
    "build",
    "label_stats",
    "label_stats_tensors",
    "mira_targets",
    "register",
    "sinkhorn_targets",
    "spherical_kmeans",
]
