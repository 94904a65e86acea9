"""Learnable unit-norm prototypes giving cosine logits (SwAV, DINO, MIRA heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from sslib.validation import check_int_at_least


class PrototypeHead(nn.Module):
    """(B, in_dim) -> (B, n_prototypes) cosine similarities in [-1, 1] to K unit-norm prototypes.

    The input is L2-normalised, then a bias-free weight-normalised Linear ``w_k = g_k v_k / ||v_k||`` is
    applied whose gain ``g_k`` is fixed at 1 (not trainable), so each prototype row has norm 1 whatever
    the direction parameter: DINO's last layer with ``norm_last_layer=True`` (facebookresearch/dino@7c446df
    vision_transformer.py L276-279). With ``norm_last_layer=False`` the gains start at 1 and are trained
    (DINO's ViT-S/16 runs), so logit ``k`` is ``g_k`` times a cosine.
    The head always computes in float32, also under autocast: the logits are divided by temperatures
    as small as tau_t (1 - beta) = 0.075, which turns bf16's 2^-8 rounding into percent-level errors
    of the targets.
    """

    def __init__(self, in_dim: int, n_prototypes: int = 3000, norm_last_layer: bool = True) -> None:
        super().__init__()
        check_int_at_least("PrototypeHead in_dim", in_dim, 1)
        check_int_at_least("PrototypeHead n_prototypes", n_prototypes, 1)
        if not isinstance(norm_last_layer, bool):
            raise ValueError(f"norm_last_layer must be true or false, got {norm_last_layer!r}")
        self.layer = weight_norm(nn.Linear(in_dim, n_prototypes, bias=False))
        gain = self.layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_dim) -> logits (B, K) in float32 (half inputs are cast up), autocast disabled.

        An all-zero row gives zero logits.
        """
        with torch.autocast(x.device.type, enabled=False):
            x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            return self.layer(F.normalize(x, dim=-1, eps=1e-12))

    def prototypes(self) -> torch.Tensor:
        """The effective prototypes, (K, in_dim), row ``k`` of norm ``g_k`` (1 with ``norm_last_layer``)."""
        return self.layer.weight

    @torch.no_grad()
    def set_prototypes(self, prototypes: torch.Tensor) -> None:
        """Make the prototypes the rows of ``prototypes`` (K, in_dim), normalised (DeepCluster-v2's centroids)."""
        direction = self.layer.parametrizations.weight.original1
        if prototypes.shape != direction.shape:
            raise ValueError(
                f"prototypes must have shape {tuple(direction.shape)}, got {tuple(prototypes.shape)}"
            )
        direction.copy_(prototypes)

    def parameters_to_freeze(self) -> list[nn.Parameter]:
        """The trainable parameters (direction, and the gains without ``norm_last_layer``), whose gradients
        SwAV and DINO cancel for the first iterations (DINO's ``cancel_gradients_last_layer``)."""
        weight = self.layer.parametrizations.weight
        return [p for p in (weight.original1, weight.original0) if p.requires_grad]
