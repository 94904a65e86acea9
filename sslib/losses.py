"""The methods' losses, for any training loop: swapped prediction (MIRA, SwAV, DINO), DeepCluster-v2's
cluster prediction, BYOL's normalised MSE, SimCLR's NT-Xent and Barlow Twins' redundancy reduction."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslib.distributed import all_gather_with_grad, all_reduce_with_grad, global_batch_size, rank
from sslib.errors import ConfigError
from sslib.validation import check_positive


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(logits / T)`` over dim 1, in float32 for half-precision logits (float64 stays float64)."""
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=1)


def swapped_prediction_loss(
    targets: list[torch.Tensor], student_logits: list[torch.Tensor], temperature: float
) -> torch.Tensor:
    """Eq. 8 of MIRA (SwAV's swapped prediction), extended to multi-crop as in SwAV and DINO.

    Each view's targets are predicted from every *other* crop:

        L = 1/|P| sum_{(v, c) in P} -1/B sum_ij t^v_ij log softmax(s^c_i / T)_j,  P = {(v, c): c != v}.

    Every view has the same number of other crops, so this equals the official codes' mean over views
    of the mean over the other crops (MIRA ``train.py`` lines 126-155, SwAV ``main_swav.py`` lines
    310-315, DINO ``main_dino.py`` lines 392-402). Eq. 8 sums its two terms: with two crops, L is
    Eq. 8 / 2. Half-precision logits are computed in float32.

    Args:
        targets: The pseudo-labels ``targets[v]`` of global view v, each of shape ``(B, K)``.
        student_logits: The student's logits ``student_logits[c]`` of crop c (global views first), each
            of shape ``(B, K)``.
        temperature: The student temperature T, > 0.

    Returns:
        The loss L, a 0-d tensor.

    Raises:
        ConfigError: If ``temperature`` is not > 0, there are fewer than 2 crops or more target views
            than crops, or the tensors are not all ``(B, K)`` of one shape.
    """
    check_positive("temperature", temperature)
    n_views, n_crops = len(targets), len(student_logits)
    if not 1 <= n_views <= n_crops or n_crops < 2:
        raise ConfigError(
            "swapped prediction needs 1 <= target views <= crops and at least 2 crops, "
            f"got {n_views} target views and {n_crops} crops"
        )
    shapes = {tuple(x.shape) for x in (*targets, *student_logits)}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ConfigError(
            f"targets and student logits must all be (B, K) of one shape, got shapes {sorted(shapes)}"
        )
    log_probs = [_log_probs(s, temperature) for s in student_logits]
    terms = [
        -(t * log_probs[c]).sum(dim=1).mean() for v, t in enumerate(targets) for c in range(n_crops) if c != v
    ]
    return torch.stack(terms).mean()


def cluster_prediction_loss(
    student_logits: list[torch.Tensor], clusters: torch.Tensor, temperature: float
) -> torch.Tensor:
    """DeepCluster-v2's loss: every crop predicts its sample's cluster.

    The loss is the mean over crops c and samples i of -log softmax(s^c_i / T)_{y_i}, as SwAV's
    ``main_deepclusterv2.py`` (lines 270-276: one cross-entropy over all crops' rows). Samples without a
    cluster (y_i = -1) are left out of the sum and the count (a batch of only such samples gives 0).
    Half-precision logits are computed in float32.

    Args:
        student_logits: The logits ``student_logits[c]`` of crop c, each of shape ``(B, K)``.
        clusters: The samples' cluster indices y, shape ``(B,)``; -1 for a sample without a cluster.
        temperature: The student temperature T, > 0.

    Returns:
        The loss, a 0-d tensor.

    Raises:
        ConfigError: If ``temperature`` is not > 0, there is no crop, or the shapes do not match.
    """
    check_positive("temperature", temperature)
    if (
        not student_logits
        or clusters.dim() != 1
        or any(s.dim() != 2 or len(s) != len(clusters) for s in student_logits)
    ):
        raise ConfigError(
            f"clusters must be (B,) and each of >= 1 crops' logits (B, K), got clusters {tuple(clusters.shape)} and "
            f"logits {[tuple(s.shape) for s in student_logits]}"
        )
    terms = [
        F.nll_loss(_log_probs(s, temperature), clusters, ignore_index=-1, reduction="sum")
        for s in student_logits
    ]
    n = (clusters >= 0).sum().clamp_min(1) * len(terms)
    return torch.stack(terms).sum() / n


def loss_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 at least (fp16/bf16 under mixed precision are upcast; float64 is kept).

    Args:
        x: Any tensor.

    Returns:
        ``x`` in float32, or float64 if it is float64.
    """
    return x.to(torch.promote_types(x.dtype, torch.float32))


def no_autocast(x: torch.Tensor) -> torch.autocast:
    """A context in which matmuls on ``x``'s device keep their input dtype (no fp16/bf16 autocast).

    Args:
        x: A tensor on the device whose autocast is turned off.

    Returns:
        A disabled ``torch.autocast`` context for ``x``'s device type.
    """
    return torch.autocast(x.device.type, enabled=False)


def check_pair(z1: torch.Tensor, z2: torch.Tensor) -> None:
    """Check that the two views' embeddings have the same (B, d) shape.

    Args:
        z1: The first view's embeddings, shape ``(B, d)``.
        z2: The second view's embeddings, shape ``(B, d)``.

    Raises:
        ConfigError: If either is not 2-D or their shapes differ.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ConfigError(
            f"the two views' embeddings must both be (B, d), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )


BN_EPS = 1e-5  # nn.BatchNorm1d's


def standardize(z: torch.Tensor, n: int, eps: float = BN_EPS) -> torch.Tensor:
    """(z - mean) / sqrt(var + eps), statistics over the global batch of ``n`` rows (biased var).

    The same as ``BatchNorm1d(D, affine=False)`` in training mode on one process; under DDP the sums are
    all-reduced (with gradient), so N ranks of B rows give what one process gives with N * B.

    Args:
        z: This rank's rows, shape ``(B, D)``.
        n: The number of rows of the global batch.
        eps: Added to the variance.

    Returns:
        The standardised rows, shape ``(B, D)``.
    """
    mean = all_reduce_with_grad(z.sum(dim=0)) / n
    centred = z - mean
    var = all_reduce_with_grad(centred.pow(2).sum(dim=0)) / n
    return centred / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = BN_EPS) -> torch.Tensor:
    """C = z1_hat^T z2_hat / N of the standardised embeddings of two views, over the global batch.

    Args:
        z1: The first view's embeddings, shape ``(B, D)``.
        z2: The second view's embeddings, shape ``(B, D)``.
        eps: Added to the variance in :func:`standardize`.

    Returns:
        C, shape ``(D, D)``, in float32 at least; the same on every rank.

    Raises:
        ConfigError: If ``z1`` and ``z2`` are not 2-D of one shape.
    """
    check_pair(z1, z2)
    z1, z2 = loss_dtype(z1), loss_dtype(z2)
    n = global_batch_size(z1.shape[0], z1.device)
    with no_autocast(z1):
        return all_reduce_with_grad(standardize(z1, n, eps).T @ standardize(z2, n, eps)) / n


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float, scale: float = 1.0) -> torch.Tensor:
    """Barlow Twins' Eq. 1: scale * [sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2].

    C is :func:`cross_correlation` (global batch under DDP, every rank gets the same loss). Computed in
    float32 at least, also under autocast.

    Args:
        z1: The first view's embeddings, shape ``(B, D)``.
        z2: The second view's embeddings, shape ``(B, D)``.
        lambd: The weight lambda of the off-diagonal terms.
        scale: The official code's ``scale-loss`` (0.024 there, 0.1 in solo-learn's CIFAR recipe).

    Returns:
        The loss, a 0-d tensor.

    Raises:
        ConfigError: If ``z1`` and ``z2`` are not 2-D of one shape.
    """
    c = cross_correlation(z1, z2)
    on_diag = (1 - c.diagonal()).pow(2).sum()
    off_diag = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return scale * (on_diag + lambd * off_diag)


def byol_loss(predictions: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """BYOL's symmetrised normalised MSE, extended to multi-crop.

    With q and z' L2-normalised, L = sum over pairs (v, c != v) of mean_i ||q^c_i - z'^v_i||^2 =
    mean_i (2 - 2 cos(q^c_i, z'^v_i)): with two views, BYOL's L + L~ = l(q^1, z'^2) + l(q^2, z'^1).
    Computed in float32 at least.

    Args:
        predictions: The online predictions ``predictions[c]`` of crop c (global crops first), each of
            shape ``(B, d)``.
        targets: The target network's projections ``targets[v]`` of global view v (no grad), each of
            shape ``(B, d)``.

    Returns:
        The loss L, a 0-d tensor.
    """
    q = [F.normalize(loss_dtype(p), dim=1) for p in predictions]
    t = [F.normalize(loss_dtype(z), dim=1) for z in targets]
    terms = [
        (2 - 2 * (q[c] * t[v]).sum(dim=1)).mean() for v in range(len(t)) for c in range(len(q)) if c != v
    ]
    return torch.stack(terms).sum()


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR Eq. 1) of the projections of two views; mean over the 2B local anchors.

    With u the L2-normalised rows, the anchor i's positive p(i) is the other view of its image and
    l_i = -log( exp(u_i . u_p(i) / T) / sum_{k != i} exp(u_i . u_k / T) ), the candidates k running over
    both views of the *global* batch: under DDP the rows of every rank are gathered with their gradient,
    so the mean of the ranks' losses (equal batches) is the loss of one process on the whole batch.
    Computed in float32 at least, also under autocast.

    Args:
        z1: The first view's projections, shape ``(B, d)``.
        z2: The second view's projections, shape ``(B, d)``.
        temperature: The temperature T.

    Returns:
        The loss, a 0-d tensor.

    Raises:
        ConfigError: If ``z1`` and ``z2`` are not 2-D of one shape.
    """
    check_pair(z1, z2)
    b = z1.shape[0]
    anchors = F.normalize(loss_dtype(torch.cat([z1, z2])), dim=1)  # (2B, d)
    candidates = all_gather_with_grad(anchors)  # (2B * world, d), rank r's rows at [2Br, 2B(r + 1))
    local = torch.arange(2 * b, device=anchors.device)
    own = rank() * 2 * b + local
    with no_autocast(anchors):
        logits = anchors @ candidates.T / temperature
    logits = logits.masked_fill(F.one_hot(own, candidates.shape[0]).bool(), float("-inf"))
    positives = rank() * 2 * b + (local + b) % (2 * b)
    return F.cross_entropy(logits, positives)
