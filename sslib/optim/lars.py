"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017).

For every parameter tensor ``w`` with gradient ``g`` in a non-excluded group:

    trust = eta * ||w|| / (||g|| + wd * ||w||)      (1 when ||w|| = 0 or ||g|| = 0)
    d     = trust * (g + wd * w)
    v     = momentum * v + d                         (v = d on the first step)
    w     = w - lr * v

Groups with ``lars_exclude=True`` (biases, normalisation parameters) skip both the trust
ratio and the weight decay: ``d = g``, i.e. plain SGD with momentum. With ``clip_lr`` the
trust ratio is replaced by ``min(trust / lr, 1)`` (LARC clipping), so the effective step
size ``lr * min(trust / lr, 1) = min(trust, lr)`` never exceeds the group's ``lr``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from sslib.validation import check_positive, check_unit_interval


class LARS(Optimizer):
    """SGD with momentum whose per-tensor step is scaled by the LARS trust ratio (module docstring)."""

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip_lr: bool = False,
    ) -> None:
        check_positive("lr", lr)
        check_unit_interval("momentum", momentum)
        check_positive("eta", eta)
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, clip_lr=clip_lr, lars_exclude=False
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                direction = _adapted_direction(p, p.grad, group)
                if group["momentum"] > 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = direction.clone()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(direction)
                    direction = state["momentum_buffer"]
                p.add_(direction, alpha=-group["lr"])
        return loss


def _adapted_direction(w: Tensor, g: Tensor, group: dict) -> Tensor:
    """``trust * (g + wd * w)``, or ``g`` for excluded groups (module docstring)."""
    if group["lars_exclude"]:
        return g
    wd = group["weight_decay"]
    w_norm = torch.linalg.vector_norm(w)
    g_norm = torch.linalg.vector_norm(g)
    trust = group["eta"] * w_norm / (g_norm + wd * w_norm)
    trust = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
    if group["clip_lr"]:
        trust = torch.clamp(trust / group["lr"], max=1.0)
    return g.add(w, alpha=wd).mul_(trust)
