"""The shared part of the non-clustering baselines (BYOL, Barlow Twins, SimCLR): backbone -> projector MLP."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from sslib.app.builders import build_projector
from sslib.app.methods.base import SSLMethod
from sslib.errors import ConfigError
from sslib.losses import loss_dtype
from sslib.modules.crops import check_crop_forward, embed_crops


class SiameseMethod(SSLMethod):
    """Backbone -> projector (:func:`sslib.heads.build_projector`), a loss on the crops' projections.

    Subclasses set ``local_crops`` (whether crops beyond the global ones are allowed) and implement
    :meth:`embedding_loss`; extra heads go in :meth:`extra_modules` so that the optimiser sees them.
    Barlow Twins and SimCLR compare exactly two views; BYOL also takes local crops.
    """

    local_crops: bool = False

    def __init__(self, cfg: DictConfig, num_classes: int, n_global: int) -> None:
        super().__init__(cfg, num_classes)
        name = cfg.method.name
        local = cfg.data.get("local_crops")
        n_local = int(local.n) if local else 0
        if self.local_crops and n_global != 2:
            raise ConfigError(f"{name} needs data.global_crops.n=2 (local crops optional), got {n_global}")
        if not self.local_crops and (n_global != 2 or n_local):
            raise ConfigError(
                f"{name} compares exactly 2 views: set data.global_crops.n=2 and data.local_crops=null "
                f"(got {n_global} global and {n_local} local crops)"
            )
        self.n_global = n_global
        self.crop_forward = check_crop_forward(cfg.method.crop_forward)
        self.projector = build_projector(self.feat_dim, cfg.method)

    def extra_modules(self) -> dict[str, nn.Module]:
        """Trainable heads besides the backbone and projector (BYOL's predictor)."""
        return {}

    def ssl_modules(self) -> nn.ModuleDict:
        return nn.ModuleDict({"backbone": self.backbone, "projector": self.projector, **self.extra_modules()})

    def embedding_loss(
        self, crops: list[torch.Tensor], z: list[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float | torch.Tensor]]:
        """Loss and metrics from the crops and their projections ``z[c]`` (B, d), global crops first."""
        raise NotImplementedError

    def ssl_step(self, crops: list[torch.Tensor], indices: torch.Tensor | None = None):
        if len(crops) < 2 or (len(crops) > 2 and not self.local_crops):
            raise ConfigError(f"{self.cfg.method.name} needs 2 crops per sample, got {len(crops)}")
        feats, embeddings = embed_crops(self.backbone, self.projector, crops, self.crop_forward)
        z = list(embeddings.split([c.shape[0] for c in crops]))
        self.monitor_views = (z[0], z[1])  # the two global views: alignment and uniformity
        loss, metrics = self.embedding_loss(crops, z)
        metrics["embedding/std"] = embedding_std(z[0])
        return loss, feats[: len(crops[0])], metrics


@torch.no_grad()
def embedding_std(z: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension std of the L2-normalised rows of ``z`` (B, d): 0 at collapse, about 1/sqrt(d) if
    spread. A 0-dim tensor on ``z``'s device, read only when the logger writes it."""
    if z.shape[0] < 2:
        return z.new_zeros((), dtype=torch.float32)
    return F.normalize(loss_dtype(z), dim=1).std(dim=0).mean()
