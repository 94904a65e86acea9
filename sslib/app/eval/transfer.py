"""Transfer linear evaluation (MIRA paper Table 5), the protocol of Ericsson et al. (2021), "How well do
self-supervised models transfer?" (linusericsson/ssl-transfer ``linear.py``).

Frozen features of train, val and test; an L2-regularised multinomial logistic regression (scikit-learn,
L-BFGS) is fitted on train for each ``C`` of a grid, the ``C`` with the best val score is kept, and the
model is refitted on train + val and scored on test with the dataset's metric:

- ``top1``: accuracy;
- ``mean_per_class``: the mean over classes of the per-class recall (Aircraft, Caltech-101, Flowers,
  Pets), :math:`\\frac{1}{C}\\sum_c \\frac{|\\{i: \\hat y_i = c = y_i\\}|}{|\\{i: y_i = c\\}|}`;
- ``map11``: the 11-point interpolated average precision of PASCAL VOC 2007, averaged over classes, of
  one binary logistic regression per class on multi-hot labels (VOC2007):
  :math:`\\mathrm{AP} = \\frac{1}{11}\\sum_{t \\in \\{0, 0.1, \\dots, 1\\}} \\max_{r \\ge t} p(r)`.

The grid follows ``linear.py``: ``C = 1 / wd`` for 45 weight decays ``wd`` log-spaced over
:math:`[10^{-6}, 10^{5}]`. Datasets without an official val split get a random 20% of train (seed 0).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from sslib.errors import ConfigError

METRICS = ("top1", "mean_per_class", "map11")
VAL_FRACTION = 0.2  # linear.py: valid_size=0.2 of train when a dataset has no val split


def c_grid(n: int = 45, low: float = -6.0, high: float = 5.0) -> list[float]:
    """``[1 / wd for wd in logspace(low, high, n)]``: from weak (``1e6``) to strong (``1e-5``) regularisation."""
    if n < 1:
        raise ConfigError(f"the C grid needs at least 1 value, got {n}")
    return [float(1.0 / wd) for wd in np.logspace(low, high, n)]


def top1_accuracy(pred: Tensor, target: Tensor) -> float:
    """Percent of ``pred`` ``(N,)`` equal to ``target`` ``(N,)``."""
    return 100.0 * (pred == target).double().mean().item()


def mean_per_class_accuracy(pred: Tensor, target: Tensor) -> float:
    """Mean over the classes present in ``target`` ``(N,)`` of the percent of their samples predicted right."""
    classes = target.unique()
    recalls = [(pred[target == c] == c).double().mean() for c in classes]
    return 100.0 * torch.stack(recalls).mean().item()


def voc11_average_precision(scores: Tensor, positive: Tensor) -> float:
    """11-point interpolated AP in [0, 1] of ``scores`` ``(N,)`` against the boolean ``positive`` ``(N,)``.

    Samples are ranked by decreasing score (ties share the precision and recall of the last of them);
    for each recall level ``t = k / 10``, ``k = 0..10``, the precision is the largest reached at recall >= t
    (0 if none), and AP is their mean.
    """
    positive = positive.bool()
    if not positive.any():
        raise ConfigError("average precision needs at least one positive sample")
    order = scores.double().argsort(descending=True)
    hits = positive[order].double()
    tp, ranked = hits.cumsum(0), scores.double()[order]
    last_of_tie = torch.cat([ranked[1:] != ranked[:-1], torch.tensor([True])])
    tp, seen = tp[last_of_tie], torch.arange(1, len(scores) + 1, dtype=torch.float64)[last_of_tie]
    precision, recall = tp / seen, tp / positive.sum()
    levels = [k / 10 for k in range(11)]  # exact: linspace's 0.30000000000000004 would skip recall 0.3
    return sum(precision[recall >= t].max().item() if (recall >= t).any() else 0.0 for t in levels) / 11


def voc11_map(scores: Tensor, targets: Tensor) -> float:
    """Mean over the ``C`` classes of :func:`voc11_average_precision`, in percent; ``scores`` and the
    multi-hot ``targets`` are ``(N, C)``."""
    return 100.0 * float(
        np.mean([voc11_average_precision(scores[:, c], targets[:, c]) for c in range(scores.shape[1])])
    )


def _sklearn():
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
    except ImportError as err:
        raise ImportError(
            f"transfer evaluation needs scikit-learn: pip install scikit-learn ({err})"
        ) from None
    return LogisticRegression, ConvergenceWarning


def fit_logistic(features: Tensor, labels: Tensor, c: float, max_iter: int = 1000):
    """scikit-learn's L-BFGS logistic regression with inverse L2 strength ``c`` fitted to ``features``
    ``(N, D)`` and integer ``labels`` ``(N,)`` (multinomial for more than two classes). Convergence
    warnings are silenced, as in ``linear.py``: the iteration budget is part of the protocol."""
    LogisticRegression, ConvergenceWarning = _sklearn()
    model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features.double().numpy(), labels.numpy())
    return model


def _score(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], c: float, metric: str, max_iter: int
) -> float:
    """``metric`` on ``test`` of the logistic regression fitted on ``train`` with ``c``."""
    (x, y), (tx, ty) = train, test
    if metric == "map11":  # one binary classifier per class of the multi-hot labels
        scores = torch.stack(
            [
                torch.from_numpy(
                    fit_logistic(x, y[:, k].long(), c, max_iter).decision_function(tx.double().numpy())
                )
                for k in range(y.shape[1])
            ],
            dim=1,
        )
        return voc11_map(scores, ty)
    pred = torch.from_numpy(fit_logistic(x, y, c, max_iter).predict(tx.double().numpy()))
    return top1_accuracy(pred, ty) if metric == "top1" else mean_per_class_accuracy(pred, ty)


@dataclass(frozen=True)
class TransferResult:
    """Test ``score`` (percent) with the ``c`` chosen on val, and every ``c``'s val score."""

    metric: str
    score: float
    c: float
    val_scores: dict[float, float] = field(default_factory=dict)


def logistic_transfer(
    train: tuple[Tensor, Tensor],
    val: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    metric: str = "top1",
    cs: Sequence[float] | None = None,
    max_iter: int = 1000,
) -> TransferResult:
    """Choose ``C`` on ``val`` (fit on ``train``), refit on ``train + val``, score ``test``.

    Each split is ``(features (N, D), labels)``, labels ``(N,)`` integers or, for ``map11``, ``(N, C)``
    multi-hot. ``cs`` defaults to :func:`c_grid`; ties keep the first (most weakly regularised) ``C``.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    cs = list(cs) if cs is not None else c_grid()
    if not cs or any(c <= 0 for c in cs):
        raise ConfigError(f"the C grid must be non-empty and positive, got {cs}")
    val_scores = {c: _score(train, val, c, metric, max_iter) for c in cs}
    best = max(val_scores, key=val_scores.__getitem__)
    trainval = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    return TransferResult(metric, _score(trainval, test, best, metric, max_iter), best, val_scores)


def random_val_split(n: int, fraction: float = VAL_FRACTION, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(train indices, val indices)``: a random ``fraction`` of ``range(n)`` (at least 1) held out."""
    if not 0 < fraction < 1:
        raise ConfigError(f"val fraction must be in (0, 1), got {fraction!r}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    held = max(1, int(fraction * n))
    return order[held:].sort().values, order[:held].sort().values
