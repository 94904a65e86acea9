"""SimCLR (Chen et al., ICML 2020): contrast each view with the other view of its image among the batch."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from sslib.app.methods.siamese import SiameseMethod
from sslib.losses import nt_xent_loss
from sslib.validation import check_positive


class SimCLR(SiameseMethod):
    """Backbone -> projector ``method.projector_dims``; :func:`nt_xent_loss` at ``method.temperature``."""

    def __init__(self, cfg: DictConfig, num_classes: int, n_global: int) -> None:
        super().__init__(cfg, num_classes, n_global)
        self.temperature = check_positive("method.temperature", cfg.method.temperature)

    def embedding_loss(self, crops: list[torch.Tensor], z: list[torch.Tensor]):
        return nt_xent_loss(z[0], z[1], self.temperature), {}
