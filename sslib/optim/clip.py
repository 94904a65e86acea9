"""DINO's gradient clipping: each parameter tensor's gradient norm capped on its own, before every step."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from sslib.validation import check_positive


@torch.no_grad()
def clip_per_parameter_(params: Iterable[Tensor], max_norm: float) -> None:
    """In place, for each ``p`` with a gradient: ``g <- g * min(1, max_norm / (||g|| + 1e-6))``.

    Unlike ``torch.nn.utils.clip_grad_norm_`` (one norm over all gradients, Lightning's
    ``gradient_clip_val``), every tensor is clipped alone, as DINO's ``utils.clip_gradients``
    (facebookresearch/dino@7c446df utils.py L132-141).

    Args:
        params: The parameters whose gradients are clipped; those without a gradient are skipped.
        max_norm: The largest norm of each tensor's gradient, > 0.

    Raises:
        ConfigError: If ``max_norm`` is not > 0.
    """
    check_positive("max_norm", max_norm)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    scales = [(max_norm / (norm + 1e-6)).clamp_(max=1.0) for norm in torch._foreach_norm(grads)]
    torch._foreach_mul_(grads, scales)  # no host sync: the scales stay on the device


def clip_before_step(optimizer: Optimizer, params: Iterable[Tensor], max_norm: float) -> RemovableHandle:
    """Clip ``params`` with :func:`clip_per_parameter_` each time ``optimizer.step()`` starts.

    For a plain loop that calls ``backward()`` then ``step()``. A step pre-hook runs inside ``step``, so
    under a ``GradScaler`` it sees unscaled gradients. It does not suit ``step(closure)``, whose closure
    computes the gradients after the pre-hooks (Lightning's loop): there
    :class:`sslib.app.methods.base.SSLMethod` clips in ``on_before_optimizer_step``.

    Args:
        optimizer: The optimiser whose steps are preceded by the clipping.
        params: The parameters to clip.
        max_norm: The largest norm of each tensor's gradient, > 0.

    Returns:
        The hook's handle; ``handle.remove()`` stops the clipping.

    Raises:
        ConfigError: If ``max_norm`` is not > 0.
    """
    check_positive("max_norm", max_norm)
    params = list(params)
    return optimizer.register_step_pre_hook(
        lambda _opt, _args, _kwargs: clip_per_parameter_(params, max_norm)
    )
