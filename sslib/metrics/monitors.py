"""Label-free monitors of a representation during pre-training: RankMe, alignment and uniformity.

- RankMe (Garrido et al. 2023, eq. 1): the effective rank of embeddings ``Z`` ``(N, D)`` with singular
  values :math:`\\sigma_k`, :math:`p_k = \\sigma_k / \\lVert\\sigma\\rVert_1 + \\varepsilon`,
  :math:`\\mathrm{RankMe}(Z) = \\exp(-\\sum_k p_k \\log p_k)`, between 1 and ``min(N, D)``; it falls
  towards 1 when the representation collapses to a few directions.
- alignment and uniformity (Wang & Isola 2020, eqs. 4-5) of L2-normalised embeddings ``f`` of two views:
  :math:`\\mathcal{L}_\\text{align} = \\mathbb{E}\\,\\lVert f(x) - f(y)\\rVert_2^2` (lower: views agree) and
  :math:`\\mathcal{L}_\\text{uniform} = \\log \\mathbb{E}_{i \\ne j}\\, e^{-2 \\lVert f(x_i) - f(x_j)\\rVert_2^2}`
  (lower: spread over the sphere; :math:`-4` at most uniform, 0 when all collapse to one point).

:class:`RepresentationMonitor` keeps the last ``samples`` rows of the features and two views' embeddings
that training steps already computed (no extra forward), and computes the three at the end of an epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sslib.errors import ConfigError
from sslib.metrics.online import gather_rows

RANKME_EPS = 1e-7  # Garrido et al. 2023, section 3


def rankme(z: Tensor, eps: float = RANKME_EPS) -> float:
    """RankMe of ``z`` (computed in float32 or wider).

    Args:
        z: Embeddings, shape ``(N, D)``.
        eps: The epsilon added to the normalised singular values.

    Returns:
        The effective rank, between 1 and ``min(N, D)``.
    """
    s = torch.linalg.svdvals(z.float() if z.dtype not in (torch.float32, torch.float64) else z)
    p = s / s.sum() + eps
    return math.exp(-(p * p.log()).sum().item())


def alignment(z1: Tensor, z2: Tensor) -> float:
    """Mean squared distance of the L2-normalised rows of the paired views ``z1``, ``z2``.

    Args:
        z1: The first view's embeddings, shape ``(N, d)``.
        z2: The second view's embeddings, shape ``(N, d)``, row i paired with row i of ``z1``.

    Returns:
        The alignment, in [0, 4].
    """
    return (F.normalize(z1.float(), dim=1) - F.normalize(z2.float(), dim=1)).pow(2).sum(1).mean().item()


def uniformity(z: Tensor) -> float:
    """log of the mean of ``exp(-2 |z_i - z_j|^2)`` over pairs ``i < j`` of the L2-normalised rows of ``z``.

    Args:
        z: Embeddings, shape ``(N, d)``, N >= 2.

    Returns:
        The uniformity, <= 0 (lower: spread over the sphere).

    Raises:
        ConfigError: If ``z`` has fewer than 2 rows.
    """
    if len(z) < 2:
        raise ConfigError(f"uniformity needs at least 2 samples, got {len(z)}")
    sq = torch.pdist(F.normalize(z.float(), dim=1)).pow(2)
    return (torch.logsumexp(-2 * sq, dim=0) - math.log(len(sq))).item()


class RepresentationMonitor:
    """The last ``samples`` rows (over steps, on this rank) of features and of two views' embeddings.

    :meth:`add` each step (detached copies; nothing is computed); :meth:`compute` gathers every rank's
    rows and returns ``{"rankme", "alignment", "uniformity"}`` (the last two only when views were
    given), then clears.

    Args:
        samples: The number of rows kept, >= 0; ``0`` disables the monitor.

    Raises:
        ConfigError: If ``samples`` is not an integer >= 0.
    """

    def __init__(self, samples: int = 2048) -> None:
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            raise ConfigError(f"monitor samples must be an integer >= 0, got {samples!r}")
        self.samples = samples
        self.reset()

    def reset(self) -> None:
        """Drop the rows kept so far."""
        self._rows: dict[str, list[Tensor]] = {"features": [], "z1": [], "z2": []}

    def _append(self, key: str, rows: Tensor) -> None:
        """Keep a detached copy of ``rows``; drop the oldest batches no longer among the last ``samples``."""
        kept = self._rows[key]
        kept.append(rows.detach().clone())
        while sum(len(r) for r in kept[1:]) >= self.samples:
            kept.pop(0)

    def add(self, features: Tensor, views: tuple[Tensor, Tensor] | None = None) -> None:
        """Keep detached copies of a step's rows; nothing is computed.

        Args:
            features: Backbone features, shape ``(B, D)``.
            views: The two views' embeddings ``(z1, z2)``, each of shape ``(B, d)``, or ``None``.
        """
        if not self.samples:
            return
        self._append("features", features)
        if views is not None:
            self._append("z1", views[0])
            self._append("z2", views[1])

    def _gathered(self, key: str) -> Tensor:
        """The last ``samples`` rows of ``key`` on this rank, then every rank's in rank order."""

        return gather_rows(torch.cat(self._rows[key])[-self.samples :].float())

    def compute(self) -> dict[str, float]:
        """The monitors of the rows kept since the last call (all ranks), ``{}`` if none; clears them."""
        out = {}
        if self._rows["features"]:
            out["rankme"] = rankme(self._gathered("features"))
        if self._rows["z1"]:
            z1, z2 = self._gathered("z1"), self._gathered("z2")
            out.update(alignment=alignment(z1, z2), uniformity=uniformity(z1))
        self.reset()
        return out

    def max_rank(self, dim: int) -> int:
        """The largest RankMe possible for ``dim``-dimensional features.

        Args:
            dim: The features' width.

        Returns:
            ``min(samples, dim)``.
        """
        return min(self.samples, dim)
