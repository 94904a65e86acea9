"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017).

For every parameter tensor ``w`` with gradient ``g`` in a non-excluded group:

    d     = g + wd * w                               (the weight-decayed gradient)
    trust = eta * ||w|| / (||g|| + wd * ||w||)       trust_ratio="paper"
    trust = eta * ||w|| / ||d||                      trust_ratio="moco"
    v     = momentum * v + trust * d                 (v = trust * d on the first step)
    w     = w - lr * v

``trust`` is 1 when ``||w|| = 0`` or the norm it divides by is 0 (``||g||`` for "paper", ``||d||``
for "moco"). The "paper" form is Eq. 6 of the LARS paper, as in solo-learn (``solo/utils/lars.py``
L142, without its 1e-8 epsilon); the "moco" form is MoCo v3's LARS (``moco/optimizer.py`` L28-36),
which DINO and the official MIRA code (``src/optimizer.py`` L128-139) use. By the triangle inequality
``||d|| <= ||g|| + wd * ||w||``, so "moco" never takes a smaller step; the two agree when
``wd * ||w||`` is negligible next to ``||g||`` or ``g`` is parallel to ``w``.

As in solo-learn (L152-165) and MoCo v3 (L38-43), ``lr`` multiplies the momentum buffer at the update;
the LARS paper's Algorithm 1 puts it inside the buffer (``v = momentum * v + lr * trust * d``,
``w = w - v``). The two agree while ``lr`` is constant and differ while a schedule changes it.

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

from sslib.validation import check_choice, check_positive, check_unit_interval

TRUST_RATIOS = ("paper", "moco")


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
        trust_ratio: str = "paper",
    ) -> None:
        check_positive("lr", lr)
        check_unit_interval("momentum", momentum)
        check_positive("eta", eta)
        check_choice("trust_ratio", trust_ratio, TRUST_RATIOS)
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            clip_lr=clip_lr,
            trust_ratio=trust_ratio,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        """Groups saved before ``trust_ratio`` existed used the "paper" form."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("trust_ratio", "paper")

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
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
    decayed = g.add(w, alpha=wd)
    w_norm = torch.linalg.vector_norm(w)
    if group["trust_ratio"] == "moco":
        checked = denominator = torch.linalg.vector_norm(decayed)
    else:
        checked = torch.linalg.vector_norm(g)
        denominator = checked + wd * w_norm
    trust = group["eta"] * w_norm / denominator
    trust = torch.where((w_norm > 0) & (checked > 0), trust, torch.ones_like(trust))
    if group["clip_lr"]:
        trust = torch.clamp(trust / group["lr"], max=1.0)
    return decayed.mul_(trust)
