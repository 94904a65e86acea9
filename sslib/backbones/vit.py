"""Vision Transformers (timm's ViT-Ti/S/B) that take crops of several sizes in one step.

``vit_small`` is timm's ``vit_small_patch16_224`` with ``dynamic_img_size=True``: the position embeddings
(learnt for ``img_size / patch_size`` patches a side) are interpolated to the grid of each input, so the
224 px global crops and the 96 px local crops of multi-crop go through the same model. By
``pos_embed_interpolation``: ``"timm"`` (timm's ``resample_abs_pos_embed``: bicubic to the exact grid,
anti-aliased) or ``"dino"`` (DINO's ``interpolate_pos_encoding``, :func:`dino_pos_embed`). Features are
the class token after the final norm (``global_pool="token"``, DINO's ``x[:, 0]``) or the mean of the
patch tokens (``global_pool="avg"``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from sslib.backbones.base import BACKBONES, Backbone
from sslib.backbones.timm_models import timm_backbone
from sslib.errors import ConfigError

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
POS_EMBED_INTERPOLATIONS = ("timm", "dino")
"""``pos_embed_interpolation``: timm's ``resample_abs_pos_embed`` or DINO's rule (:func:`dino_pos_embed`)."""
DINO_GRID_OFFSET = 0.1
"""DINO adds 0.1 to the new grid in its scale factor "to avoid floating point error" (vision_transformer.py L184-186)."""


def resolve_patch_size(patch_size: int | str, img_size: int) -> int:
    """``patch_size`` as an int: ``"auto"`` is 4 when ``img_size <= 64``, else 16; ints >= 1 as given.

    Args:
        patch_size: An integer >= 1 or ``"auto"``.
        img_size: The image size that ``"auto"`` looks at.

    Returns:
        The patch size.

    Raises:
        ConfigError: If ``patch_size`` is neither an integer >= 1 nor ``"auto"``.
    """
    if patch_size == AUTO:
        return 4 if img_size <= SMALL_IMAGE_SIZE else 16
    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1:
        raise ConfigError(f"backbone.patch_size must be an integer >= 1 or {AUTO!r}, got {patch_size!r}")
    return patch_size


def no_cifar_stem(name: str) -> ConfigError:
    """The error for ``backbone.cifar`` on a ViT, saying how a ViT takes small images instead.

    Args:
        name: The ViT's name, for the message.

    Returns:
        The error, to raise.
    """
    return ConfigError(
        f"backbone {name} has no CIFAR stem (backbone.cifar is a ResNet option); a ViT takes small images "
        f"through its patch size: backbone.patch_size=4 (patch_size={AUTO} picks 4 for crops <= "
        f"{SMALL_IMAGE_SIZE} px)"
    )


def check_pos_embed_interpolation(value: object) -> str:
    """``value`` if it is one of :data:`POS_EMBED_INTERPOLATIONS`.

    Args:
        value: The ``pos_embed_interpolation`` to check.

    Returns:
        ``value``.

    Raises:
        ConfigError: If ``value`` is not ``"timm"`` or ``"dino"``.
    """
    if not isinstance(value, str) or value not in POS_EMBED_INTERPOLATIONS:
        raise ConfigError(
            f"backbone.pos_embed_interpolation must be one of {', '.join(POS_EMBED_INTERPOLATIONS)}, "
            f"got {value!r}"
        )
    return value


def check_crop_sizes(name: str, kwargs: dict, sizes: Iterable[tuple[str, int]]) -> None:
    """Check that every crop size fits ViT ``name`` built with ``kwargs``, before any work.

    A crop must be a whole number of patches a side (timm's patch embedding refuses other sizes), and a
    ViT has no CIFAR stem; a bad ``pos_embed_interpolation`` is refused here too. Backbones other than
    ``vit_*`` are not checked.

    Args:
        name: The backbone name.
        kwargs: The backbone's arguments (``patch_size``, ``img_size``, ``pos_embed_interpolation``, ...).
        sizes: ``(config key, size)`` of each crop size, the key named in the error.

    Raises:
        ConfigError: If a crop is not a multiple of the patch size, ``kwargs`` has ``cifar``, or
            ``pos_embed_interpolation`` or ``patch_size`` is not allowed.
    """
    if name not in VITS:
        return
    if "cifar" in kwargs:
        raise no_cifar_stem(name)
    check_pos_embed_interpolation(kwargs.get("pos_embed_interpolation", "timm"))
    patch = resolve_patch_size(kwargs.get("patch_size", 16), kwargs.get("img_size", 224))
    for key, size in sizes:
        if size % patch:
            nearest = [n for n in (size - size % patch, size - size % patch + patch) if n > 0]
            raise ConfigError(
                f"{key}={size} is not a multiple of the ViT patch size {patch} (backbone.patch_size); "
                f"use a multiple of {patch}, e.g. {' or '.join(map(str, nearest))}"
            )


def disable_drop_path(module: ModuleT) -> ModuleT:
    """Turn off stochastic depth in ``module`` (timm's ``DropPath`` layers), in place.

    For EMA teachers: DINO builds its teacher without ``drop_path_rate`` (facebookresearch/dino@7c446df
    main_dino.py L166), so only the student drops residual branches.

    Args:
        module: Any module; its ``DropPath`` layers get ``drop_prob = 0``.

    Returns:
        ``module``.
    """
    for layer in module.modules():
        if isinstance(layer, DropPath):
            layer.drop_prob = 0.0
    return module


def dino_pos_embed(
    pos_embed: torch.Tensor,
    grid: tuple[int, int],
    learnt_grid: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """DINO's interpolation of a position-embedding table to a grid of ``grid = (rows, cols)`` patches.

    The rule of ``interpolate_pos_encoding``
    (facebookresearch/dino@7c446df, vision_transformer.py L174-194): the table as it is when the grid
    has as many patches as the learnt one and is square (L177-178); otherwise the patch part, as a
    (1, D, R, C) image (L188), is resized with ``F.interpolate(mode="bicubic")`` by the scale factors
    ``((rows + 0.1) / R, (cols + 0.1) / C)`` (L182-191; no anti-aliasing, ``align_corners=False``), so
    the output has rows x cols cells but samples the table at the spacing of the scale factor, not of
    ``R / rows``; the prefix entries go back in front unchanged (L179, L194). DINO's ``w`` is the image
    height (L197, ``B, nc, w, h = x.shape``), so its first factor scales the rows, as here; DINO's learnt
    grid is square (``sqrt(N)``, L188). DINO compares image sizes, this the grids: the same for crops
    that are whole numbers of patches, as sslib's are. Computed in the table's dtype (float32 for half
    precision).

    Args:
        pos_embed: The table, shape ``(1, P + R * C, D)``, with P prefix entries first (P = 1 for DINO's
            class token).
        grid: ``(rows, cols)``, the patch grid of the input.
        learnt_grid: ``(R, C)``, the grid the table was learnt for.
        num_prefix_tokens: P, the number of prefix entries.

    Returns:
        The table for the grid, shape ``(1, P + rows * cols, D)``.

    Raises:
        RuntimeError: If the interpolation does not give a ``(rows, cols)`` grid (DINO's assert).
    """
    rows, cols = grid
    if rows * cols == learnt_grid[0] * learnt_grid[1] and rows == cols:
        return pos_embed
    prefix, patches = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = pos_embed.shape[-1]
    image = patches.reshape(1, learnt_grid[0], learnt_grid[1], dim).permute(0, 3, 1, 2)
    if image.dtype not in (torch.float32, torch.float64):
        image = image.float()
    scale = ((rows + DINO_GRID_OFFSET) / learnt_grid[0], (cols + DINO_GRID_OFFSET) / learnt_grid[1])
    image = F.interpolate(image, scale_factor=scale, mode="bicubic")
    if image.shape[-2:] != (rows, cols):  # DINO's assert (L192)
        raise RuntimeError(f"DINO's interpolation gave a {tuple(image.shape[-2:])} grid, not {grid}")
    patches = image.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=1)


class DinoPosEmbedViT(VisionTransformer):
    """timm's ``VisionTransformer`` that interpolates its position embeddings by DINO's rule.

    Only :meth:`_pos_embed` differs (:func:`dino_pos_embed` in place of timm's ``resample_abs_pos_embed``):
    no new parameters or buffers, so the state dict is a plain timm ViT's. :func:`use_dino_pos_embed` turns
    a built timm ViT into one (a subclass rather than a patched method: copies, pickles and
    ``torch.compile`` see an ordinary class).
    """

    def _pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, rows, cols, D) patch tokens -> (B, prefix + rows * cols, D) with the class (and register)
        tokens and position embeddings, as timm's own (``no_embed_class``: the table covers the patches
        only, added before the prefix tokens are put in front; else it covers both), then ``pos_drop``.
        Without ``dynamic_img_size`` (no interpolation) or a table, timm's own step."""
        if self.pos_embed is None or not self.dynamic_img_size:
            return super()._pos_embed(x)
        batch, rows, cols, dim = x.shape
        table = dino_pos_embed(
            self.pos_embed,
            (rows, cols),
            tuple(self.patch_embed.grid_size),
            0 if self.no_embed_class else self.num_prefix_tokens,
        )
        x = x.reshape(batch, rows * cols, dim)
        prefix = [t.expand(batch, -1, -1) for t in (self.cls_token, self.reg_token) if t is not None]
        if self.no_embed_class:
            return self.pos_drop(torch.cat([*prefix, x + table], dim=1))
        return self.pos_drop(torch.cat([*prefix, x], dim=1) + table)


def use_dino_pos_embed(model: nn.Module) -> DinoPosEmbedViT:
    """Make timm ViT ``model`` a :class:`DinoPosEmbedViT` in place (same weights and keys).

    Args:
        model: A timm ``VisionTransformer``.

    Returns:
        ``model``, now a :class:`DinoPosEmbedViT`.

    Raises:
        ConfigError: If ``model`` is not a timm ``VisionTransformer``.
    """
    if type(model) is not VisionTransformer:
        raise ConfigError(
            f"backbone.pos_embed_interpolation=dino needs a timm VisionTransformer, got {type(model).__name__}"
        )
    model.__class__ = DinoPosEmbedViT
    return model  # type: ignore[return-value]


def vit(
    name: str,
    patch_size: int | str = 16,
    img_size: int = 224,
    drop_path_rate: float = 0.0,
    global_pool: str = "token",
    pos_embed_interpolation: str = "timm",
    **timm_kwargs,
) -> Backbone:
    """ViT ``name``: (B, 3, H, W) -> (B, embed_dim), H and W multiples of the patch.

    Args:
        name: A key of :data:`VITS`.
        patch_size: An integer >= 1 or ``"auto"`` (:func:`resolve_patch_size`).
        img_size: Sets the grid of the learnt position embeddings, interpolated to other sizes by
            ``pos_embed_interpolation``; a multiple of the patch size.
        drop_path_rate: The stochastic depth of the last block (linear from 0 in the first), in [0, 1).
        global_pool: ``"token"`` (the class token after the final norm) or ``"avg"`` (the mean of the
            patch tokens).
        pos_embed_interpolation: ``"timm"``, timm's anti-aliased bicubic resampling to the exact grid,
            or ``"dino"``, DINO's rule, :func:`dino_pos_embed`.
        **timm_kwargs (Any): Go to ``timm.create_model`` (e.g. ``embed_dim``, ``depth``, ``num_heads``).

    Returns:
        ``(module, embed_dim)``.

    Raises:
        ConfigError: If an argument is out of its range, ``img_size`` is not a multiple of the patch
            size, or ``cifar`` is given.
    """
    if "cifar" in timm_kwargs:
        raise no_cifar_stem(name)
    if global_pool not in GLOBAL_POOLS:
        raise ConfigError(
            f"backbone.global_pool must be one of {', '.join(GLOBAL_POOLS)}, got {global_pool!r}"
        )
    check_pos_embed_interpolation(pos_embed_interpolation)
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ConfigError(f"backbone.img_size must be an integer >= 1, got {img_size!r}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ConfigError(f"backbone.drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
    patch = resolve_patch_size(patch_size, img_size)
    if img_size % patch:
        raise ConfigError(f"backbone.img_size={img_size} is not a multiple of the patch size {patch}")
    timm_kwargs.setdefault("dynamic_img_size", True)
    model, dim = timm_backbone(
        VITS[name],
        patch_size=patch,
        img_size=img_size,
        drop_path_rate=drop_path_rate,
        global_pool=global_pool,
        **timm_kwargs,
    )
    if pos_embed_interpolation == "dino":
        model = use_dino_pos_embed(model)
    return model, dim


def _register(name: str) -> None:
    def factory(
        patch_size: int | str = 16,
        img_size: int = 224,
        drop_path_rate: float = 0.0,
        global_pool: str = "token",
        pos_embed_interpolation: str = "timm",
        **timm_kwargs,
    ) -> Backbone:
        return vit(
            name, patch_size, img_size, drop_path_rate, global_pool, pos_embed_interpolation, **timm_kwargs
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"timm's {VITS[name]} taking any multiple of the patch size (see :func:`vit`)."
    BACKBONES.register(name)(factory)


for _name in VITS:
    _register(_name)
