"""How a step's crops go through backbone and projector: grouped by resolution, or one crop at a time.

The two differ only through BatchNorm: its batch statistics are those of the forwarded group.
"""

from __future__ import annotations

import torch
from torch import nn

from sslib.errors import ConfigError

CROP_FORWARDS = ("resolution", "per_crop")


def check_crop_forward(mode: str) -> str:
    """``mode`` if it is one of :data:`CROP_FORWARDS`.

    Args:
        mode: ``"resolution"`` or ``"per_crop"``.

    Returns:
        ``mode``.

    Raises:
        ConfigError: If ``mode`` is neither.
    """
    if mode not in CROP_FORWARDS:
        raise ConfigError(f"method.crop_forward must be one of {', '.join(CROP_FORWARDS)}, got {mode!r}")
    return mode


def forward_by_resolution(module: nn.Module, crops: list[torch.Tensor]) -> torch.Tensor:
    """Run ``module`` once per run of equally-sized consecutive crops.

    Args:
        module: The module to run, e.g. the backbone.
        crops: The crops, each of shape ``(B_c, 3, H_c, W_c)``.

    Returns:
        The outputs of all crops, shape ``(sum of B_c, D)``, in crop order.
    """
    outputs, start = [], 0
    while start < len(crops):
        end = start + 1
        while end < len(crops) and crops[end].shape[-2:] == crops[start].shape[-2:]:
            end += 1
        outputs.append(module(torch.cat(crops[start:end])))
        start = end
    return torch.cat(outputs)


def embed_crops(
    backbone: nn.Module, projector: nn.Module, crops: list[torch.Tensor], mode: str = "resolution"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Backbone features and projector embeddings of ``crops``, in crop order.

    Args:
        backbone: The backbone, images to features ``(B, D)``.
        projector: The projector, features ``(B, D)`` to embeddings ``(B, d)``.
        crops: The crops, each of shape ``(B_c, 3, H_c, W_c)``.
        mode: ``"resolution"`` (SwAV, DINO): the backbone runs once per resolution, the projector once
            on all features, so with multi-crop the projector's BatchNorm statistics mix global and local
            crops. ``"per_crop"`` (the official MIRA code, ``train.py`` ``Model.forward``): backbone and
            projector run on each crop alone, so every crop is normalised with its own statistics.

    Returns:
        ``(features, embeddings)``, of shapes ``(sum of B_c, D)`` and ``(sum of B_c, d)``.

    Raises:
        ConfigError: If ``mode`` is unknown.
    """
    if check_crop_forward(mode) == "per_crop":
        per_crop = [backbone(c) for c in crops]
        return torch.cat(per_crop), torch.cat([projector(f) for f in per_crop])
    feats = forward_by_resolution(backbone, crops)
    return feats, projector(feats)
