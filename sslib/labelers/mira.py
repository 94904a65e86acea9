"""MIRA: mutual-information regularised assignment (Lee et al., NeurIPS 2022, §3.1-3.2)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from sslib.distributed import all_reduce
from sslib.labelers.base import Labeler
from sslib.labelers.registry import register
from sslib.validation import Checked, check_int_at_least, check_positive, check_unit_interval

# Dynamic-range guards. A mat-vec whose products underflow below float32's normal range runs ~10x
# slower on CPU (measured here), and the plain form p^(1/(1-beta)) underflows to 0 and then gives
# 0 * inf = NaN. So q is flushed to 0 below Q_FLOOR (relative to its row's largest entry) and the
# cluster weights v are kept in [1, V_MAX]: every product in the loop stays a normal float32 for
# K < 1e5. Neither bound binds unless a cluster's marginal is < V_MAX^(-1/beta) (1e-24 at beta=2/3)
# of the largest one, i.e. below float32 resolution of the targets.
Q_FLOOR = 1e-16
V_MAX = 1e16
LOG2_V_MAX = math.log2(V_MAX)

Callback = Callable[[int, torch.Tensor], None]


def mira_targets(
    logits: torch.Tensor,
    temperature: float,
    beta: float,
    n_iters: int,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Solve Eq. 4 for float32 ``logits`` (B, K); return W* (B, K), rows on the simplex.

    With p = softmax(logits / tau), the iteration of Eq. 7 is run on the marginal and W is read
    off with Eq. 5. Both equations only use p_ij^(1/(1-beta)) up to a per-row factor, so we use
    q = softmax(logits / (tau (1 - beta))) (row-normalised, no underflow). Writing
    v_j = u_j^(-beta/(1-beta)), one step of Eq. 7 is two mat-vecs and a K-vector update:

        s_i = sum_k q_ik v_k,   m_j = 1/B sum_i q_ij / s_i,   v_j <- m_j^(-beta)   (u_j = m_j^(1-beta))

    and Eq. 5 is w_ij = q_ij v_j / s_i. W depends on v only up to scale, so v is scaled to 1 on
    the largest cluster (and 1/B drops out). The start is u0_j = (mean_i q_ij)^(1-beta). Every B x K pass but the first
    is in place and the loop allocates nothing, so the cost is one B x K allocation, a few passes and
    2 (n_iters + 1) mat-vecs. Sums over the batch are
    all-reduced, so the result is the same for any split of the batch over ranks.
    ``callback(n, W_n)`` is called after each iteration (for convergence studies).
    """
    q = _flushed_exp(logits, 1.0 / (temperature * (1.0 - beta)))
    qt = q.t()
    s = q.sum(dim=1).reciprocal_()  # start: the row sums of q, so mass = B mean_i q_ij / sum_k q_ik
    mass = all_reduce(torch.mv(qt, s))
    v = _cluster_weights(mass, beta)
    for it in range(n_iters):  # no allocation in the loop: s and mass are reused, v aliases mass
        torch.mv(q, v, out=s).reciprocal_()
        v = _cluster_weights(all_reduce(torch.mv(qt, s, out=mass)), beta)
        if callback is not None:
            callback(it + 1, _assignments(q, v))
    return _assignments(q, v, out=q)


def _flushed_exp(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """exp(scale (l_ij - max_k l_ik)) (B, K), a new tensor, entries below Q_FLOOR set to 0.

    This is q up to a per-row factor (rows peak at 1), to which Eq. 5 and Eq. 7 are invariant.
    The difference is taken before scaling, so the largest entries (l_ij near the max) keep full
    precision. (exp2 is ~1.6x cheaper than exp on CPU, but measured here it raised the Eq. 5 residual
    at beta = 0.9 from 9.0e-7 to 1.2e-6, so exp stays.)
    """
    q = torch.sub(logits, logits.amax(dim=1, keepdim=True)).mul_(scale).exp_()
    return F.threshold_(q, Q_FLOOR, 0.0)


def _cluster_weights(mass: torch.Tensor, beta: float) -> torch.Tensor:
    """v_j proportional to m_j^(-beta) (K,) from the column mass (K,) = B m_j, in [1, V_MAX], in place.

    Scaled so the largest cluster has v = 1 (the scale of ``mass``, 1/B, cancels):
    v_j = 2^min(beta (log2 max_k m_k - log2 m_j), log2 V_MAX), so clusters with no mass get V_MAX,
    which multiplies only zeros. In log space this is ~2x cheaper than a division and ``pow``.
    """
    if beta == 0.0:
        return mass.fill_(1.0)
    log_mass = mass.log2_()
    top = log_mass.max().mul_(beta)
    return torch.add(top, log_mass, alpha=-beta, out=log_mass).clamp_max_(LOG2_V_MAX).exp2_()


def _assignments(q: torch.Tensor, v: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 5: w_ij = q_ij v_j / sum_k q_ik v_k, (B, K); written into ``out`` when given."""
    w = torch.mul(q, v, out=out)
    return w.div_(w.sum(dim=1, keepdim=True))


@register("mira")
class MIRALabeler(Labeler):
    """MIRA pseudo-labels (Eq. 4-7): KL to p = softmax(logits / tau) minus beta times the MI estimate.

    ``temperature`` is the teacher temperature tau_t (paper: 0.225), ``beta`` in [0, 1) the
    trade-off (paper: 2/3), ``n_iters`` the number of fixed-point iterations (paper: 30).
    ``beta`` and ``temperature`` may be changed during training (schedules).
    """

    temperature = Checked(check_positive)
    beta = Checked(check_unit_interval)

    def __init__(self, temperature: float = 0.225, beta: float = 2 / 3, n_iters: int = 30) -> None:
        super().__init__()
        self.temperature = temperature
        self.beta = beta
        self.n_iters = check_int_at_least("n_iters", n_iters, 1)

    def assign(self, logits: torch.Tensor) -> torch.Tensor:
        return mira_targets(logits, self.temperature, self.beta, self.n_iters)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, beta={self.beta:.4g}, n_iters={self.n_iters}"
