"""Exponential-moving-average teachers (BYOL/DINO/MIRA)."""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
from torch import nn

from sslib.backbones import disable_drop_path
from sslib.errors import ConfigError
from sslib.validation import check_unit_interval

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def make_teacher(student: ModuleT) -> ModuleT:
    """A frozen deep copy of ``student`` to be updated by :func:`ema_update`, without stochastic depth.

    Stochastic depth is turned off with :func:`sslib.backbones.disable_drop_path`: DINO's teacher has
    none, BYOL's target network is deterministic.

    Args:
        student: The module to copy.

    Returns:
        The teacher, with ``requires_grad=False`` on every parameter.
    """
    teacher = disable_drop_path(copy.deepcopy(student))
    teacher.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """theta_t <- m theta_t + (1 - m) theta_s for every parameter, paired in ``parameters()`` order.

    Buffers (BatchNorm running statistics) stay the teacher's own, updated by its own forward passes:
    the official MIRA (``train.py`` lines 97-99) and DINO (``main_dino.py`` lines 346-350) codes average
    parameters only.

    Args:
        teacher: The teacher, updated in place.
        student: The student, read only.
        momentum: The momentum m, in [0, 1].

    Raises:
        ConfigError: If ``momentum`` is not in [0, 1] or the two modules have different numbers of
            parameters.
    """
    check_unit_interval("momentum", momentum, closed_right=True)
    t_params: list[torch.Tensor] = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ConfigError(f"teacher has {len(t_params)} parameters, student {len(s_params)}")
    torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)
