"""Vision Transformers (timm's ViT-Ti/S/B) that take crops of several sizes in one step.

``vit_small`` is timm's ``vit_small_patch16_224`` with ``dynamic_img_size=True``: the position embeddings
(learnt for ``img_size / patch_size`` patches a side) are interpolated by timm to the grid of each input,
so the 224 px global crops and the 96 px local crops of multi-crop go through the same model. Features
are the class token after the final norm (``global_pool="token"``, DINO's ``x[:, 0]``) or the mean of
the patch tokens (``global_pool="avg"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from timm.layers import DropPath
from torch import nn

from sslib.backbones.base import BACKBONES, Backbone
from sslib.backbones.timm_models import timm_backbone

ModuleT = TypeVar("ModuleT", bound=nn.Module)

VITS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}
"""sslib's ViT names and the timm models they build (DINO's ``vit_tiny|small|base``: 192/384/768 wide)."""

AUTO = "auto"
SMALL_IMAGE_SIZE = 64
"""``patch_size: auto`` is 4 for images up to this size (CIFAR's 32 px: an 8 x 8 grid), else 16."""
GLOBAL_POOLS = ("token", "avg")


def resolve_patch_size(patch_size: int | str, img_size: int) -> int:
    """``patch_size`` as an int: ``"auto"`` is 4 when ``img_size <= 64``, else 16; ints >= 1 as given."""
    if patch_size == AUTO:
        return 4 if img_size <= SMALL_IMAGE_SIZE else 16
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ValueError(f"backbone.patch_size must be an integer >= 1 or {AUTO!r}, got {patch_size!r}")
    return patch_size


def no_cifar_stem(name: str) -> ValueError:
    """The error for ``backbone.cifar`` on a ViT, saying how a ViT takes small images instead."""
    return ValueError(
        f"backbone {name} has no CIFAR stem (backbone.cifar is a ResNet option); a ViT takes small images "
        f"through its patch size: backbone.patch_size=4 (patch_size={AUTO} picks 4 for crops <= "
        f"{SMALL_IMAGE_SIZE} px)"
    )


def check_crop_sizes(name: str, kwargs: dict, sizes: Iterable[tuple[str, int]]) -> None:
    """One-line ``ValueError`` unless every ``(config key, size)`` crop fits ViT ``name`` built with ``kwargs``.

    A crop must be a whole number of patches a side (timm's patch embedding refuses other sizes), and a
    ViT has no CIFAR stem. Backbones other than ``vit_*`` are not checked.
    """
    if name not in VITS:
        return
    if "cifar" in kwargs:
        raise no_cifar_stem(name)
    patch = resolve_patch_size(kwargs.get("patch_size", 16), kwargs.get("img_size", 224))
    for key, size in sizes:
        if size % patch:
            nearest = [n for n in (size - size % patch, size - size % patch + patch) if n > 0]
            raise ValueError(
                f"{key}={size} is not a multiple of the ViT patch size {patch} (backbone.patch_size); "
                f"use a multiple of {patch}, e.g. {' or '.join(map(str, nearest))}"
            )


def disable_drop_path(module: ModuleT) -> ModuleT:
    """Turn off stochastic depth in ``module`` (timm's ``DropPath`` layers), in place; returns it.

    For EMA teachers: DINO builds its teacher without ``drop_path_rate`` (facebookresearch/dino@7c446df
    main_dino.py L166), so only the student drops residual branches.
    """
    for layer in module.modules():
        if isinstance(layer, DropPath):
            layer.drop_prob = 0.0
    return module


def vit(
    name: str,
    patch_size: int | str = 16,
    img_size: int = 224,
    drop_path_rate: float = 0.0,
    global_pool: str = "token",
    **timm_kwargs,
) -> Backbone:
    """ViT ``name`` (a key of :data:`VITS`): (B, 3, H, W) -> (B, embed_dim), H and W multiples of the patch.

    ``img_size`` sets the grid of the learnt position embeddings (interpolated to other sizes),
    ``drop_path_rate`` the stochastic depth of the last block (linear from 0 in the first), and
    ``timm_kwargs`` go to ``timm.create_model`` (e.g. ``embed_dim``, ``depth``, ``num_heads``).
    """
    if "cifar" in timm_kwargs:
        raise no_cifar_stem(name)
    if global_pool not in GLOBAL_POOLS:
        raise ValueError(
            f"backbone.global_pool must be one of {', '.join(GLOBAL_POOLS)}, got {global_pool!r}"
        )
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"backbone.img_size must be an integer >= 1, got {img_size!r}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"backbone.drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
    patch = resolve_patch_size(patch_size, img_size)
    if img_size % patch:
        raise ValueError(f"backbone.img_size={img_size} is not a multiple of the patch size {patch}")
    timm_kwargs.setdefault("dynamic_img_size", True)
    return timm_backbone(
        VITS[name],
        patch_size=patch,
        img_size=img_size,
        drop_path_rate=drop_path_rate,
        global_pool=global_pool,
        **timm_kwargs,
    )


def _register(name: str) -> None:
    def factory(
        patch_size: int | str = 16,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
        **timm_kwargs,
    ) -> Backbone:
        return vit(name, patch_size, img_size, drop_path_rate, global_pool, **timm_kwargs)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"timm's {VITS[name]} taking any multiple of the patch size (see :func:`vit`)."
    BACKBONES.register(name)(factory)


for _name in VITS:
    _register(_name)
