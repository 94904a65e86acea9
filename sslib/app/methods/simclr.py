"""SimCLR (Chen et al., ICML 2020): contrast each view with the other view of its image among the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from sslib.app.methods.siamese import SiameseMethod, check_pair, loss_dtype, no_autocast
from sslib.distributed import all_gather_with_grad, rank
from sslib.validation import check_positive


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR Eq. 1) of the (B, d) projections of two views; mean over the 2B local anchors.

    With u the L2-normalised rows, the anchor i's positive p(i) is the other view of its image and
    l_i = -log( exp(u_i . u_p(i) / T) / sum_{k != i} exp(u_i . u_k / T) ), the candidates k running over
    both views of the *global* batch: under DDP the rows of every rank are gathered with their gradient,
    so the mean of the ranks' losses (equal batches) is the loss of one process on the whole batch.
    Computed in float32 at least, also under autocast.
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


class SimCLR(SiameseMethod):
    """Backbone -> projector ``method.projector_dims``; :func:`nt_xent_loss` at ``method.temperature``."""

    def __init__(self, cfg: DictConfig, num_classes: int, n_global: int) -> None:
        super().__init__(cfg, num_classes, n_global)
        self.temperature = check_positive("method.temperature", cfg.method.temperature)

    def embedding_loss(self, crops: list[torch.Tensor], z: list[torch.Tensor]):
        return nt_xent_loss(z[0], z[1], self.temperature), {}
