"""Learnable unit-norm prototypes giving cosine logits (SwAV, DINO, MIRA, DeepCluster-v2 heads)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from sslib.errors import ConfigError
from sslib.validation import check_bool, check_choice, check_int_at_least

WEIGHT_NORM = "weight_norm"
RENORMALIZE = "renormalize"
PARAMETRIZATIONS = (WEIGHT_NORM, RENORMALIZE)
GAIN, DIRECTION = "parametrizations.weight.original0", "parametrizations.weight.original1"  # g, v


class PrototypeHead(nn.Module):
    """(B, in_dim) -> (B, n_prototypes) cosine similarities in [-1, 1] to K unit-norm prototypes.

    The input is L2-normalised, then multiplied by the (K, in_dim) prototype matrix ``W``. Two
    parametrisations of ``W`` give the same forward pass and different gradients:

    - ``"weight_norm"``: a bias-free weight-normalised Linear ``w_k = g_k v_k / ||v_k||`` whose gain
      ``g_k`` is fixed at 1 (not trainable), so each row has norm 1 whatever the direction parameter
      ``v``, and the gradient reaching ``v`` has no radial part. DINO's last layer with
      ``norm_last_layer=True`` (facebookresearch/dino@7c446df vision_transformer.py L276-279) and the
      official MIRA head. With ``norm_last_layer=False`` the gains start at 1 and are trained (DINO's
      ViT-S/16 runs), so logit ``k`` is ``g_k`` times a cosine.
    - ``"renormalize"``: a plain bias-free Linear whose rows the training loop projects back onto the
      unit sphere before every step (:meth:`renormalize_`), so the optimiser sees the full gradient of
      ``W``: SwAV's prototypes (facebookresearch/swav@06b1b7c main_swav.py L277-281, src/resnet50.py
      L217) and DeepCluster-v2's (main_deepclusterv2.py, centroids copied into a plain Linear).

    The head always computes in float32, also under autocast: the logits are divided by temperatures
    as small as tau_t (1 - beta) = 0.075, which turns bf16's 2^-8 rounding into percent-level errors
    of the targets.

    Args:
        in_dim: The input width, >= 1.
        n_prototypes: The number of prototypes K, >= 1.
        norm_last_layer: Whether the gains ``g_k`` stay fixed at 1 (``False`` trains them; only
            ``"weight_norm"`` has gains).
        parametrization: ``"weight_norm"`` or ``"renormalize"``, as above.

    Raises:
        ConfigError: If a size is below 1, ``parametrization`` is unknown, ``norm_last_layer`` is not a
            bool, or ``norm_last_layer=False`` is asked of ``"renormalize"``.
    """

    def __init__(
        self,
        in_dim: int,
        n_prototypes: int = 3000,
        norm_last_layer: bool = True,
        parametrization: str = WEIGHT_NORM,
    ) -> None:
        super().__init__()
        check_int_at_least("PrototypeHead in_dim", in_dim, 1)
        check_int_at_least("PrototypeHead n_prototypes", n_prototypes, 1)
        check_choice("method.prototype_parametrization", parametrization, PARAMETRIZATIONS)
        check_bool("norm_last_layer", norm_last_layer)
        self.parametrization = parametrization
        if parametrization == RENORMALIZE:
            if not norm_last_layer:
                raise ConfigError(
                    "method.norm_last_layer=false trains the prototypes' gains, which only "
                    "method.prototype_parametrization=weight_norm has"
                )
            self.layer = nn.Linear(in_dim, n_prototypes, bias=False)
            self.renormalize_()
            self._register_load_state_dict_pre_hook(_weight_norm_to_plain)
            return
        self.layer = weight_norm(nn.Linear(in_dim, n_prototypes, bias=False))
        gain = self.layer.get_parameter(GAIN)
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits normalize(x) W^T in float32 (half inputs are cast up), autocast disabled.

        Args:
            x: Features, shape ``(B, in_dim)``. An all-zero row gives zero logits.

        Returns:
            Logits, shape ``(B, K)``, float32 (float64 for float64 input).
        """
        with torch.autocast(x.device.type, enabled=False):
            x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            return self.layer(F.normalize(x, dim=-1, eps=1e-12))

    def prototypes(self) -> torch.Tensor:
        """The effective prototypes ``W``.

        Returns:
            ``W``, shape ``(K, in_dim)``: row ``k`` of norm ``g_k`` (1 with ``norm_last_layer``); with
            ``"renormalize"``, of norm 1 right after :meth:`renormalize_`.
        """
        return self.layer.weight

    @torch.no_grad()
    def renormalize_(self) -> None:
        """Project every prototype row back to unit L2 norm; call before every training step.

        Only ``"renormalize"`` has anything to do: ``"weight_norm"``'s rows have norm 1 by construction.
        """
        if self.parametrization == RENORMALIZE:
            self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1))

    @torch.no_grad()
    def set_prototypes(self, prototypes: torch.Tensor) -> None:
        """Make the prototypes the rows of ``prototypes``, normalised (DeepCluster-v2's centroids).

        Args:
            prototypes: The new prototypes, shape ``(K, in_dim)``.

        Raises:
            ConfigError: If ``prototypes`` does not have shape ``(K, in_dim)``.
        """
        target = self.parameters_to_freeze()[0]
        if prototypes.shape != target.shape:
            raise ConfigError(
                f"prototypes must have shape {tuple(target.shape)}, got {tuple(prototypes.shape)}"
            )
        target.copy_(F.normalize(prototypes, dim=1))

    def parameters_to_freeze(self) -> list[nn.Parameter]:
        """The prototype parameters, whose gradients SwAV and DINO cancel for the first iterations.

        DINO's ``cancel_gradients_last_layer``, SwAV's ``freeze_prototypes_niters``.

        Returns:
            The direction ``v`` and, without ``norm_last_layer``, the gains; or the plain ``W``.
        """
        if self.parametrization == RENORMALIZE:
            return [self.layer.get_parameter("weight")]
        gain = self.layer.get_parameter(GAIN)
        return [self.layer.get_parameter(DIRECTION), *([gain] if gain.requires_grad else [])]


def _weight_norm_to_plain(state_dict: dict, prefix: str, *args) -> None:
    """Load a weight-normalised head's state (``g``, ``v``) into a ``"renormalize"`` head as ``g v / ||v||``."""
    gain_key, direction_key = f"{prefix}layer.{GAIN}", f"{prefix}layer.{DIRECTION}"
    if direction_key in state_dict:
        gain, direction = state_dict.pop(gain_key), state_dict.pop(direction_key)
        state_dict[f"{prefix}layer.weight"] = gain * F.normalize(direction, dim=1)
