"""Backbones: image encoders mapping (B, 3, H, W) to features (B, feat_dim).

``build("resnet18", cifar=True)`` gives ``(module, 512)``; ``build("vit_small", patch_size=16)`` timm's
ViT-S/16 taking crops of any multiple of the patch size; any timm model name also works, e.g.
``build("vit_tiny_patch16_224", img_size=32)`` or ``build("timm", model_name=...)``.
"""

from __future__ import annotations

import timm

from sslib.backbones import resnet, vit  # noqa: F401  (register resnet18/50, vit_tiny/small/base)
from sslib.backbones.base import BACKBONES, Backbone
from sslib.backbones.timm_models import timm_backbone
from sslib.backbones.vit import check_crop_sizes, disable_drop_path
from sslib.errors import ConfigError

__all__ = ["BACKBONES", "Backbone", "available", "build", "check_crop_sizes", "disable_drop_path"]


def available() -> list[str]:
    """Sorted registered backbone names (any timm model name is accepted by ``build`` too).

    Returns:
        The registered names, sorted.
    """
    return BACKBONES.available()


def build(name: str, **kwargs) -> Backbone:
    """Build backbone ``name``; unregistered timm names go to the ``timm`` factory.

    Args:
        name: A registered backbone name (see :func:`available`) or any timm model name.
        **kwargs (Any): The backbone's arguments, e.g. ``cifar=True`` for a ResNet, ``patch_size=4`` for a
            ViT, ``img_size=32`` for a timm model.

    Returns:
        ``(module, feat_dim)``: the module maps images ``(B, 3, H, W)`` to features ``(B, feat_dim)``.

    Raises:
        ConfigError: If ``name`` is unknown or an argument is not one the backbone takes.
    """
    if name in BACKBONES:
        return BACKBONES.build(name, **kwargs)
    if timm.is_model(name):
        return timm_backbone(name, **kwargs)
    raise ConfigError(
        f"unknown backbone '{name}'; available: {', '.join(available())}; any timm model name is accepted too"
    )
