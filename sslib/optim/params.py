"""Split a module's parameters into weight-decayed and bias/normalisation groups."""

from __future__ import annotations

from torch import nn


def param_groups(module: nn.Module, weight_decay: float, exclude_bias_norm: bool = True) -> list[dict]:
    """Optimiser parameter groups for ``module`` (trainable parameters only).

    Weights (``ndim >= 2``) get ``weight_decay`` and LARS adaptation. With ``exclude_bias_norm``,
    biases and normalisation parameters (``ndim <= 1``) go to a second group with
    ``weight_decay=0`` and ``lars_exclude=True``. Empty groups are dropped.
    """
    adapted, excluded = [], []
    for p in module.parameters():
        if p.requires_grad:
            (excluded if exclude_bias_norm and p.ndim <= 1 else adapted).append(p)
    groups = [
        {"params": adapted, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]
