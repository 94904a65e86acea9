"""Barlow Twins (Zbontar et al., ICML 2021): the cross-correlation of two views' embeddings -> identity."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from sslib.app.methods.siamese import SiameseMethod, check_pair, loss_dtype, no_autocast
from sslib.distributed import all_reduce_with_grad, global_batch_size
from sslib.validation import check_positive

BN_EPS = 1e-5  # nn.BatchNorm1d's


def standardize(z: torch.Tensor, n: int, eps: float = BN_EPS) -> torch.Tensor:
    """(B, D) -> (z - mean) / sqrt(var + eps), statistics over the global batch of ``n`` rows (biased var).

    The same as ``BatchNorm1d(D, affine=False)`` in training mode on one process; under DDP the sums are
    all-reduced (with gradient), so N ranks of B rows give what one process gives with N * B.
    """
    mean = all_reduce_with_grad(z.sum(dim=0)) / n
    centred = z - mean
    var = all_reduce_with_grad(centred.pow(2).sum(dim=0)) / n
    return centred / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = BN_EPS) -> torch.Tensor:
    """C = z1_hat^T z2_hat / N (D, D) of the standardised (B, D) embeddings of two views, over the global batch."""
    check_pair(z1, z2)
    z1, z2 = loss_dtype(z1), loss_dtype(z2)
    n = global_batch_size(z1.shape[0], z1.device)
    with no_autocast(z1):
        return all_reduce_with_grad(standardize(z1, n, eps).T @ standardize(z2, n, eps)) / n


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float, scale: float = 1.0) -> torch.Tensor:
    """Barlow Twins' Eq. 1 on (B, D) embeddings: scale * [sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2].

    C is :func:`cross_correlation` (global batch under DDP, every rank gets the same loss). ``scale`` is
    the official code's ``scale-loss`` (0.024 there, 0.1 in solo-learn's CIFAR recipe). Computed in float32
    at least, also under autocast.
    """
    c = cross_correlation(z1, z2)
    on_diag = (1 - c.diagonal()).pow(2).sum()
    off_diag = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return scale * (on_diag + lambd * off_diag)


class BarlowTwins(SiameseMethod):
    """Backbone -> projector ``method.projector_dims``; :func:`barlow_twins_loss` of the two global views.

    ``method.lambd`` weighs the off-diagonal (redundancy) terms, ``method.scale_loss`` scales the loss.
    """

    def __init__(self, cfg: DictConfig, num_classes: int, n_global: int) -> None:
        super().__init__(cfg, num_classes, n_global)
        self.lambd = check_positive("method.lambd", cfg.method.lambd)
        self.scale_loss = check_positive("method.scale_loss", cfg.method.scale_loss)

    def embedding_loss(self, crops: list[torch.Tensor], z: list[torch.Tensor]):
        return barlow_twins_loss(z[0], z[1], self.lambd, self.scale_loss), {}
