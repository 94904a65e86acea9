"""Any timm model as a backbone (classifier removed, never pretrained)."""

from __future__ import annotations

from typing import cast

import timm
from timm.models import is_model_in_modules

from sslib.backbones.base import BACKBONES, Backbone
from sslib.errors import ConfigError

DYNAMIC_SIZE_MODULES = ("vision_transformer", "deit")
"""timm modules whose models take ``dynamic_img_size``: on by default, so multi-crop works."""


@BACKBONES.register("timm")
def timm_backbone(model_name: str = "vit_small_patch16_224", **timm_kwargs) -> Backbone:
    """``timm.create_model(model_name, pretrained=False, num_classes=0, **timm_kwargs)``.

    Maps (B, 3, H, W) -> (B, model.num_features). ViTs (timm's ``vision_transformer`` and ``deit``
    modules) get ``dynamic_img_size=True`` unless it is given, so that crops of several sizes go through
    one model (position embeddings interpolated).

    Args:
        model_name: A timm model name.
        **timm_kwargs (Any): Go to the model (e.g. ``img_size=32`` for a ViT). ``cifar`` is a
            torchvision-ResNet option and is refused.

    Returns:
        ``(module, model.num_features)``.

    Raises:
        ConfigError: If the name is not a timm model, ``cifar`` is given, or the model rejects its
            arguments.
    """
    if "cifar" in timm_kwargs:
        raise ConfigError(
            f"timm model '{model_name}' does not take 'cifar'; use resnet18/resnet50 for a CIFAR stem, "
            "or pass timm arguments such as img_size=32"
        )
    if not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model '{model_name}'")
    if is_model_in_modules(model_name, DYNAMIC_SIZE_MODULES):
        timm_kwargs.setdefault("dynamic_img_size", True)
    try:
        model = timm.create_model(model_name, pretrained=False, num_classes=0, **timm_kwargs)
    except TypeError as err:
        raise ConfigError(f"timm model '{model_name}' rejected its arguments: {err}") from err
    return model, cast(int, model.num_features)
