"""LARS: layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017).

For every parameter tensor ``w`` with gradient ``g`` in a non-excluded group:

    d     = g + wd * w                               (the weight-decayed gradient)
    trust = eta * ||w|| / (||g|| + wd * ||w|| + eps) trust_ratio="paper"
    trust = eta * ||w|| / (||d|| + eps)              trust_ratio="moco"
    v     = momentum * v + trust * d                 (v = trust * d on the first step)
    w     = w - lr * v

``trust`` is 1 when ``||w|| = 0`` or the norm it divides by is 0 (``||g||`` for "paper", ``||d||``
for "moco"). The "paper" form is Eq. 6 of the LARS paper, as in solo-learn (``solo/utils/lars.py``
L142, ``eps`` 1e-8) and apex's LARC that SwAV uses (``apex/parallel/LARC.py``, ``eps`` 1e-8, with
``clip_lr`` false); the "moco" form is MoCo v3's LARS (``moco/optimizer.py`` L28-36, ``eps`` 0),
which DINO and the official MIRA code (``src/optimizer.py`` L128-139) use. Where a gradient is
exactly zero, apex's LARC leaves the tensor undecayed, this LARS decays it at the plain lr. By the triangle inequality
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
from typing import cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from sslib.errors import ConfigError
from sslib.validation import check_choice, check_positive, check_unit_interval

TRUST_RATIOS = ("paper", "moco")


class LARS(Optimizer):
    """SGD with momentum whose per-tensor step is scaled by the LARS trust ratio (module docstring).

    Args:
        params: Parameters, or groups (dicts) that may set any of the options below and
            ``lars_exclude=True`` (skip the trust ratio and the weight decay).
        lr: The learning rate, > 0.
        momentum: The momentum, in [0, 1).
        weight_decay: The weight decay wd, >= 0.
        eta: The trust coefficient, > 0.
        clip_lr: Whether the trust ratio is replaced by ``min(trust / lr, 1)`` (LARC clipping).
        trust_ratio: ``"paper"`` or ``"moco"`` (module docstring).
        foreach: How a group's tensors are batched. ``True``: all tensors of one device and dtype at
            once, in ``torch._foreach_*`` ops with the trust ratios as one vector (about one kernel per
            tensor in all, against ~15 per tensor one at a time, and no host synchronisation); ``False``:
            one tensor at a time; ``None``: the first for CUDA tensors, the second elsewhere, as torch's
            optimisers choose. On a CPU, where kernels cost no launch, one tensor at a time is faster:
            38.9 against 48.9 ms a step for ResNet-18 with a DINO head (``python
            benchmarks/optimizer.py``, in docs/benchmarks.md).
        eps: Added to the trust ratio's denominator, >= 0.

    Raises:
        ConfigError: If an argument is out of its range or ``trust_ratio`` is unknown.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.02,
        clip_lr: bool = False,
        trust_ratio: str = "paper",
        foreach: bool | None = None,
        eps: float = 0.0,
    ) -> None:
        check_positive("lr", lr)
        check_unit_interval("momentum", momentum)
        check_positive("eta", eta)
        check_choice("trust_ratio", trust_ratio, TRUST_RATIOS)
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ConfigError(f"optim.kwargs.eps must be a number >= 0, got {eps!r}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            clip_lr=clip_lr,
            trust_ratio=trust_ratio,
            lars_exclude=False,
            foreach=foreach,
            eps=float(eps),
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        """Groups saved before ``trust_ratio``, ``foreach`` or ``eps`` existed used the "paper" form, the
        device's default batching and no epsilon."""
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("trust_ratio", "paper")
            group.setdefault("foreach", None)
            group.setdefault("eps", 0.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient.

        Args:
            closure: Re-evaluates the model and returns the loss; called (with grad enabled) before the
                update.

        Returns:
            ``closure()``'s loss, or ``None`` without a closure.

        Raises:
            RuntimeError: If a gradient is sparse.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                raise RuntimeError("LARS does not support sparse gradients")
            for chunk in _chunks(params, group["foreach"]):
                self._update(chunk, group)
        return loss

    def _update(self, params: list[Tensor], group: dict) -> None:
        """``w = w - lr * v`` with ``v = momentum * v + d`` (``v = d`` on a tensor's first step) for the
        tensors ``params`` of one device and dtype, ``d`` the adapted direction of each."""
        directions: list[Tensor] = [cast(Tensor, p.grad) for p in params]  # step() kept those with one
        if not group["lars_exclude"]:
            directions = _adapted_directions(params, directions, group)
        if group["momentum"] > 0:
            states = [self.state[p] for p in params]
            kept = [i for i, state in enumerate(states) if "momentum_buffer" in state]
            if kept:
                buffers = [states[i]["momentum_buffer"] for i in kept]
                torch._foreach_mul_(buffers, group["momentum"])
                torch._foreach_add_(buffers, [directions[i] for i in kept])
            for state, direction in zip(states, directions, strict=True):
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = direction.clone()
            directions = [state["momentum_buffer"] for state in states]
        torch._foreach_add_(params, directions, alpha=-group["lr"])


def _chunks(params: list[Tensor], foreach: bool | None) -> list[list[Tensor]]:
    """``params`` in the lists one update handles (:class:`LARS`'s ``foreach``): one per device and dtype
    when batching, else one per tensor."""
    if foreach is False or (foreach is None and not all(p.is_cuda for p in params)):
        return [[p] for p in params]
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for p in params:
        groups.setdefault((p.device, p.dtype), []).append(p)
    return list(groups.values())


def _adapted_directions(weights: list[Tensor], grads: list[Tensor], group: dict) -> list[Tensor]:
    """``trust * (g + wd * w)`` for each tensor of a non-excluded group, the trust ratios computed
    together as one vector (module docstring)."""
    wd = group["weight_decay"]
    decayed = torch._foreach_add(grads, weights, alpha=wd)
    w_norm = torch.stack(torch._foreach_norm(weights))
    if group["trust_ratio"] == "moco":
        checked = denominator = torch.stack(torch._foreach_norm(decayed))
    else:
        checked = torch.stack(torch._foreach_norm(grads))
        denominator = checked + wd * w_norm
    trust = group["eta"] * w_norm / (denominator + group["eps"])
    trust = torch.where((w_norm > 0) & (checked > 0), trust, torch.ones_like(trust))
    if group["clip_lr"]:
        trust = torch.clamp(trust / group["lr"], max=1.0)
    for direction, ratio in zip(decayed, trust.unbind(0), strict=True):  # one kernel per tensor
        direction.mul_(ratio)
    return list(decayed)
