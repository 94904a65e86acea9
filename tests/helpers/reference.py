"""Float64 references written directly from the papers' equations (not from sslib's code)."""

from __future__ import annotations

import math

import torch


def mira_eq7(logits: torch.Tensor, tau: float, beta: float, n_iters: int) -> torch.Tensor:
    """MIRA exactly as Eq. 7 then Eq. 5 are written, in float64: returns W (B, K)."""
    z = logits.double()
    p = torch.softmax(z / tau, dim=1)
    a, b = 1.0 / (1.0 - beta), beta / (1.0 - beta)
    pa = p**a
    u = torch.softmax(z / (tau * (1 - beta)), dim=1).mean(0) ** (1 - beta)  # u0 = (mean_i q_ij)^(1-beta)
    for _ in range(n_iters):
        denom = (u ** (-b) * pa).sum(dim=1, keepdim=True)  # sum_k u_k^(-b) p_ik^a
        u = (pa / denom).mean(0) ** (1 - beta)
    num = u ** (-b) * pa
    return num / num.sum(dim=1, keepdim=True)


def eq5_rhs(w: torch.Tensor, p: torch.Tensor, beta: float) -> torch.Tensor:
    """Right-hand side of Eq. 5 evaluated at the marginal of W (float64, (B, K))."""
    wbar = w.mean(0)
    num = wbar ** (-beta / (1 - beta)) * p ** (1 / (1 - beta))
    return num / num.sum(dim=1, keepdim=True)


def eq6_rhs(wbar: torch.Tensor, p: torch.Tensor, beta: float) -> torch.Tensor:
    """Right-hand side of Eq. 6 at the marginal ``wbar`` (K,)."""
    pa = p ** (1 / (1 - beta))
    denom = (wbar ** (-beta / (1 - beta)) * pa).sum(dim=1, keepdim=True)
    return (pa / denom).mean(0) ** (1 - beta)


def eq4_objective(w: torch.Tensor, p: torch.Tensor, beta: float) -> float:
    """Eq. 4: -1/B sum w log p + (1-beta)/B sum w log w + beta sum wbar log wbar (float64)."""
    w, p = w.double(), p.double()
    n = w.shape[0]
    wbar = w.mean(0)
    xlogy = torch.special.xlogy
    return float(
        -(w * p.log()).sum() / n + (1 - beta) * xlogy(w, w).sum() / n + beta * xlogy(wbar, wbar).sum()
    )


def swav_sinkhorn(logits: torch.Tensor, epsilon: float, n_iters: int) -> torch.Tensor:
    """SwAV's distributed_sinkhorn for one process, transcribed from the paper's pseudo-code, float64."""
    q = torch.exp(logits.double() / epsilon).t()  # K x B
    n_protos, n_samples = q.shape
    q /= q.sum()
    for _ in range(n_iters):
        q /= q.sum(dim=1, keepdim=True)
        q /= n_protos
        q /= q.sum(dim=0, keepdim=True)
        q /= n_samples
    q *= n_samples
    return q.t()


def log_softmax_row(scores: list[float]) -> list[float]:
    """``log softmax`` of one row of scores, in Python floats (double precision), shifted by the max."""
    top = max(scores)
    log_norm = top + math.log(sum(math.exp(s - top) for s in scores))
    return [s - log_norm for s in scores]


def swapped_prediction(targets, student_logits, temperature: float) -> float:
    """Multi-crop swapped prediction averaged as SwAV's ``main_swav.py`` (lines 289-315) does, in floats.

    For each target view v: the mean over the other crops c != v of the batch mean of
    -sum_j t^v_ij log softmax(s^c_i / T)_j; then the mean over the target views.
    """
    n_crops, total = len(student_logits), 0.0
    for v, t in enumerate(targets):
        subloss = 0.0
        for c in range(n_crops):
            if c == v:
                continue
            rows = [log_softmax_row([x / temperature for x in s]) for s in student_logits[c].tolist()]
            batch = [
                -sum(tj * lj for tj, lj in zip(ti, li, strict=True))
                for ti, li in zip(t.tolist(), rows, strict=True)
            ]
            subloss += sum(batch) / len(batch)
        total += subloss / (n_crops - 1)
    return total / len(targets)


def cluster_prediction(student_logits, clusters, temperature: float) -> float:
    """DeepCluster-v2's loss as ``main_deepclusterv2.py`` (lines 270-276): one cross-entropy over the rows of
    all crops, each sample's cluster repeated per crop, rows without a cluster (-1) ignored; 0 if none."""
    terms = [
        -log_softmax_row([x / temperature for x in row])[y]
        for s in student_logits
        for row, y in zip(s.tolist(), clusters.tolist(), strict=True)
        if y >= 0
    ]
    return sum(terms) / len(terms) if terms else 0.0
