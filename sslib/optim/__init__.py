"""Optimisers (LARS, SGD, AdamW), parameter grouping, per-tensor gradient clipping and per-iteration schedules.

``sslib.app.optimizer.configure`` builds a run's optimiser and schedule from its config.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from sslib.errors import ConfigError
from sslib.optim.clip import clip_before_step, clip_per_parameter_
from sslib.optim.lars import LARS
from sslib.optim.params import param_groups
from sslib.optim.schedules import (
    WarmupCosine,
    build_scheduler,
    cosine_ramp,
    resolve_warmup_start_ratio,
    scaled_lr,
    warmup_cosine,
)
from sslib.registry import Registry
from sslib.validation import check_positive

OPTIMIZERS: Registry[Optimizer] = Registry("optimizer")
OPTIMIZERS.register("lars")(LARS)
OPTIMIZERS.register("sgd")(torch.optim.SGD)
OPTIMIZERS.register("adamw")(torch.optim.AdamW)

_USES_MOMENTUM = frozenset({"lars", "sgd"})


def build_optimizer(
    name: str,
    module_or_groups: nn.Module | Iterable[Tensor] | Iterable[dict],
    lr: float,
    weight_decay: float,
    momentum: float | None = None,
    **kwargs,
) -> Optimizer:
    """Build optimiser ``name`` (``lars``, ``sgd`` or ``adamw``).

    Args:
        name: ``"lars"``, ``"sgd"`` or ``"adamw"``.
        module_or_groups: A module, split with :func:`param_groups` (no decay / no LARS adaptation for
            biases and norms); or parameters or groups, passed through.
        lr: The learning rate, > 0.
        weight_decay: The weight decay, >= 0.
        momentum: For ``lars`` and ``sgd`` (``None``: 0.9); ``adamw`` refuses it (its ``betas`` play that
            role).
        **kwargs (Any): Go to the optimiser's constructor.

    Returns:
        The optimiser.

    Raises:
        ConfigError: If ``name`` is unknown, ``lr`` or ``weight_decay`` is out of range, ``adamw`` is
            given a momentum, or a keyword is not one the optimiser takes.
    """
    OPTIMIZERS.get(name)
    check_positive("lr", lr)
    if weight_decay < 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if isinstance(module_or_groups, nn.Module):
        params = param_groups(module_or_groups, weight_decay)
    else:
        params = list(cast(Iterable[dict], module_or_groups))  # tensors or groups: the optimiser takes both
    if name in _USES_MOMENTUM:
        kwargs["momentum"] = 0.9 if momentum is None else momentum
    elif momentum is not None:
        raise ConfigError(f"optimizer '{name}' does not take momentum (got {momentum!r}); use kwargs.betas")
    return OPTIMIZERS.build(name, params=params, lr=lr, weight_decay=weight_decay, **kwargs)


__all__ = [
    "LARS",
    "OPTIMIZERS",
    "WarmupCosine",
    "build_optimizer",
    "build_scheduler",
    "clip_before_step",
    "clip_per_parameter_",
    "cosine_ramp",
    "param_groups",
    "resolve_warmup_start_ratio",
    "scaled_lr",
    "warmup_cosine",
]
