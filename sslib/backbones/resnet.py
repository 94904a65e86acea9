"""torchvision ResNets as backbones (classifier removed), with an optional CIFAR stem."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision import models

from sslib.backbones.base import BACKBONES, Backbone
from sslib.errors import ConfigError

STEM_PADDINGS = (1, 2)


def use_cifar_stem(model: models.ResNet, padding: int = 1) -> None:
    """Replace the ImageNet stem (7x7 stride-2 conv + max-pool) by a 3x3 stride-1 conv, in place.

    Keeps more resolution for small images: a 32x32 input ends as a 4x4 map before pooling, not 1x1.

    Args:
        model: A torchvision ResNet, changed in place.
        padding: The new conv's padding. ``1`` keeps the 32x32 size; ``2`` gives the 34x34 map (then 5x5
            before pooling) of the official MIRA code (``src/builder.py``) and solo-learn
            (``solo/methods/base.py``), with which their CIFAR numbers were produced.

    Raises:
        ConfigError: If ``padding`` is not 1 or 2.
    """
    if padding not in STEM_PADDINGS:
        raise ConfigError(f"stem_padding must be one of {STEM_PADDINGS}, got {padding!r}")
    model.conv1 = nn.Conv2d(3, model.conv1.out_channels, kernel_size=3, stride=1, padding=padding, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def _resnet(
    arch: Callable[..., models.ResNet], cifar: bool, zero_init_residual: bool, stem_padding: int
) -> Backbone:
    """Build ``arch`` untrained, with ``fc`` replaced by ``nn.Identity``; feat_dim is ``fc.in_features``.

    ``zero_init_residual`` starts each residual branch's last BatchNorm at zero (Goyal et al. 2017).
    """
    model = arch(weights=None, zero_init_residual=zero_init_residual)
    if cifar:
        use_cifar_stem(model, stem_padding)
    feat_dim = model.fc.in_features
    model.fc = nn.Identity()
    return model, feat_dim


@BACKBONES.register("resnet18")
def resnet18(cifar: bool = False, zero_init_residual: bool = False, stem_padding: int = 1) -> Backbone:
    """ResNet-18, untrained, without its classifier: (B, 3, H, W) -> (B, 512).

    Args:
        cifar: Whether to use the CIFAR stem (:func:`use_cifar_stem`).
        zero_init_residual: Whether each residual branch's last BatchNorm starts at zero (Goyal et al.
            2017).
        stem_padding: The CIFAR stem's padding, 1 or 2 (see :func:`use_cifar_stem`).

    Returns:
        ``(module, 512)``.

    Raises:
        ConfigError: If ``stem_padding`` is not 1 or 2 (with ``cifar``).
    """
    return _resnet(models.resnet18, cifar, zero_init_residual, stem_padding)


@BACKBONES.register("resnet50")
def resnet50(cifar: bool = False, zero_init_residual: bool = False, stem_padding: int = 1) -> Backbone:
    """ResNet-50, untrained, without its classifier: (B, 3, H, W) -> (B, 2048).

    Args:
        cifar: Whether to use the CIFAR stem (:func:`use_cifar_stem`).
        zero_init_residual: Whether each residual branch's last BatchNorm starts at zero (Goyal et al.
            2017).
        stem_padding: The CIFAR stem's padding, 1 or 2 (see :func:`use_cifar_stem`).

    Returns:
        ``(module, 2048)``.

    Raises:
        ConfigError: If ``stem_padding`` is not 1 or 2 (with ``cifar``).
    """
    return _resnet(models.resnet50, cifar, zero_init_residual, stem_padding)
