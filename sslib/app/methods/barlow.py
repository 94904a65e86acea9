"""Barlow Twins (Zbontar et al., ICML 2021): the cross-correlation of two views' embeddings -> identity."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from sslib.app.methods.siamese import SiameseMethod
from sslib.losses import barlow_twins_loss
from sslib.validation import check_positive


class BarlowTwins(SiameseMethod):
    """Backbone -> projector ``method.projector_dims``; :func:`barlow_twins_loss` of the two global views.

    ``method.lambd`` weighs the off-diagonal (redundancy) terms, ``method.scale_loss`` scales the loss.
    """

    def __init__(self, cfg: DictConfig, num_classes: int, n_global: int) -> None:
        super().__init__(cfg, num_classes, n_global)
        self.lambd = check_positive("method.lambd", cfg.method.lambd)
        self.scale_loss = check_positive("method.scale_loss", cfg.method.scale_loss)

    def embedding_loss(self, crops: list[torch.Tensor], z: list[torch.Tensor]):
        return barlow_twins_loss(z[0], z[1], self.lambd, self.scale_loss), {}
