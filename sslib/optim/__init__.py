"""Optimisers (LARS, SGD, AdamW), parameter grouping and per-iteration schedules.

``sslib.optim.setup.configure`` builds a run's optimiser and schedule from its config.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from sslib.optim.lars import LARS
from sslib.optim.params import param_groups
from sslib.optim.schedules import (
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
    momentum: float = 0.9,
    **kwargs,
) -> Optimizer:
    """Build optimiser ``name`` (``lars``, ``sgd`` or ``adamw``).

    A module is split with :func:`param_groups` (no decay / no LARS adaptation for biases and norms);
    parameters or groups are passed through. ``momentum`` is ignored by ``adamw`` (use ``betas``);
    ``kwargs`` go to the optimiser's constructor, unknown ones are a one-line ``ValueError``.
    """
    OPTIMIZERS.get(name)
    check_positive("lr", lr)
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if isinstance(module_or_groups, nn.Module):
        params = param_groups(module_or_groups, weight_decay)
    else:
        params = list(module_or_groups)
    if name in _USES_MOMENTUM:
        kwargs["momentum"] = momentum
    return OPTIMIZERS.build(name, params=params, lr=lr, weight_decay=weight_decay, **kwargs)


__all__ = [
    "LARS",
    "OPTIMIZERS",
    "build_optimizer",
    "build_scheduler",
    "cosine_ramp",
    "param_groups",
    "resolve_warmup_start_ratio",
    "scaled_lr",
    "warmup_cosine",
]
