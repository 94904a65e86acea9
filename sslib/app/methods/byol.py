"""BYOL (Grill et al., NeurIPS 2020): an online network predicts the projections of an EMA target network."""

from __future__ import annotations

from typing import cast

import torch
from omegaconf import DictConfig
from torch import nn

from sslib.app.methods.siamese import SiameseMethod
from sslib.errors import ConfigError
from sslib.heads import MLP
from sslib.losses import byol_loss
from sslib.modules.crops import embed_crops
from sslib.modules.ema import make_teacher
from sslib.validation import check_unit_interval


class BYOL(SiameseMethod):
    """Online backbone -> projector -> predictor; target = EMA of backbone + projector (no predictor).

    ``method.projector_dims``, ``method.predictor_dims`` (hidden..., out; out must equal the projector's),
    ``method.ema`` ({base_momentum, final_momentum}): the target's momentum follows a cosine ramp per
    iteration (BYOL's tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2). Local crops, if any, are predicted
    from too but the targets are those of the two global views.
    """

    local_crops = True

    def __init__(self, cfg: DictConfig, num_classes: int, n_global: int) -> None:
        super().__init__(cfg, num_classes, n_global)
        m = cfg.method
        out = m.projector_dims[-1]
        if m.predictor_dims[-1] != out:
            raise ConfigError(
                f"method.predictor_dims must end with the projector's output size {out}, got {list(m.predictor_dims)}"
            )
        for key in ("base_momentum", "final_momentum"):
            check_unit_interval(f"method.ema.{key}", m.ema[key], closed_right=True)
        self.predictor = MLP(
            [out, *m.predictor_dims],
            norm=m.projector_norm,
            activation=m.projector_activation,
        )
        self.teacher = make_teacher(nn.ModuleDict({"backbone": self.backbone, "projector": self.projector}))

    def extra_modules(self) -> dict[str, nn.Module]:
        return {"predictor": self.predictor}

    def embedding_loss(self, crops: list[torch.Tensor], z: list[torch.Tensor]):
        predictions = self.predictor(torch.cat(z)).split([len(c) for c in crops])
        teacher = cast(nn.ModuleDict, self.teacher)  # made in __init__
        with torch.no_grad():
            global_crops = crops[: self.n_global]
            _, targets = embed_crops(
                teacher["backbone"], teacher["projector"], global_crops, self.crop_forward
            )
        return byol_loss(list(predictions), list(targets.split([len(c) for c in global_crops]))), {}
