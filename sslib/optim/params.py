"""Split a module's parameters into weight-decayed and excluded (biases, norms, tokens) groups."""

from __future__ import annotations

from torch import nn


def token_names(module: nn.Module) -> set[str]:
    """Full names of the parameters that submodules list in ``no_weight_decay()``.

    timm's convention: a ViT's ``pos_embed``, ``cls_token``, register and distillation tokens.

    Args:
        module: The module to search.

    Returns:
        The parameters' names, as ``module.named_parameters()`` gives them.
    """
    names = set()
    for prefix, sub in module.named_modules():
        listed = getattr(sub, "no_weight_decay", None)
        if callable(listed):
            names |= {f"{prefix}.{name}" if prefix else name for name in listed()}
    return names


def param_groups(
    module: nn.Module, weight_decay: float, exclude_bias_norm: bool = True, exclude_tokens: bool = False
) -> list[dict]:
    """Optimiser parameter groups for ``module`` (trainable parameters only).

    Weights (``ndim >= 2``) get ``weight_decay`` and LARS adaptation; the excluded parameters go to a
    second group with ``weight_decay=0`` and ``lars_exclude=True``. Empty groups are dropped.

    Args:
        module: The module whose trainable parameters are grouped.
        weight_decay: The weight decay of the first group.
        exclude_bias_norm: Whether biases and normalisation parameters (``ndim <= 1``) are excluded.
        exclude_tokens: Whether the parameters of :func:`token_names` (position embeddings, class token)
            are excluded.

    Returns:
        The groups, each ``{"params", "weight_decay", "lars_exclude"}``.
    """
    tokens = token_names(module) if exclude_tokens else set()
    adapted: list[nn.Parameter] = []
    excluded: list[nn.Parameter] = []
    for name, p in module.named_parameters():
        if p.requires_grad:
            skip = (exclude_bias_norm and p.ndim <= 1) or name in tokens
            (excluded if skip else adapted).append(p)
    groups = [
        {"params": adapted, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]
