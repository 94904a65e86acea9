"""Methods: LightningModules built from a composed config (``cfg.method.name``)."""

from __future__ import annotations

from omegaconf import DictConfig

from sslib.app.methods.barlow import BarlowTwins
from sslib.app.methods.base import SSLMethod
from sslib.app.methods.byol import BYOL
from sslib.app.methods.clustering import ClusteringMethod
from sslib.app.methods.deepcluster import DeepClusterV2
from sslib.app.methods.simclr import SimCLR
from sslib.registry import Registry

METHODS: Registry[SSLMethod] = Registry("method")
for _name in ("mira", "swav", "dino"):  # one loop, three recipes (sslib/app/conf/method/*.yaml)
    METHODS.register(_name)(ClusteringMethod)
METHODS.register("deepclusterv2")(DeepClusterV2)
METHODS.register("byol")(BYOL)  # the non-clustering baselines (no labeler)
METHODS.register("barlow")(BarlowTwins)
METHODS.register("simclr")(SimCLR)


def available() -> list[str]:
    return METHODS.available()


def build(cfg: DictConfig, num_classes: int, n_global: int) -> SSLMethod:
    """The method named by ``cfg.method.name``; unknown names raise a one-line ``ConfigError``."""
    return METHODS.get(cfg.method.name)(cfg, num_classes=num_classes, n_global=n_global)


__all__ = [
    "BYOL",
    "METHODS",
    "BarlowTwins",
    "ClusteringMethod",
    "DeepClusterV2",
    "SSLMethod",
    "SimCLR",
    "available",
    "build",
]
