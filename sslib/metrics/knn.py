"""Weighted k-nearest-neighbour classifier on frozen features (Wu et al., 2018; DINO).

Features are L2-normalised; each test row takes its ``k`` most cosine-similar training rows
and every neighbour ``j`` adds ``exp(sim_j / T)`` to the score of its class:

    score[c] = sum_{j in top-k} exp(sim_j / T) * [y_j = c]
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sslib.errors import ConfigError
from sslib.validation import check_int_at_least, check_positive


def _check_inputs(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, num_classes: int
) -> None:
    """One-line ``ValueError`` on mismatched shapes or out-of-range labels."""
    if train_features.ndim != 2 or test_features.ndim != 2:
        raise ConfigError(
            f"features must be 2-D (N, D), got train {tuple(train_features.shape)}, "
            f"test {tuple(test_features.shape)}"
        )
    if train_features.shape[1] != test_features.shape[1]:
        raise ConfigError(
            f"feature dims differ: train has {train_features.shape[1]}, test has {test_features.shape[1]}"
        )
    if train_features.shape[0] == 0:
        raise ConfigError("the training feature bank is empty")
    if train_labels.shape != (train_features.shape[0],):
        raise ConfigError(
            f"train_labels must have shape ({train_features.shape[0]},), got {tuple(train_labels.shape)}"
        )
    lowest, highest = int(train_labels.min()), int(train_labels.max())
    if lowest < 0 or highest >= num_classes:
        raise ConfigError(f"train_labels must lie in [0, {num_classes}), got values in [{lowest}, {highest}]")


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    normalized: bool = False,
) -> Tensor:
    """Class scores of the weighted kNN (module docstring).

    Computed and returned on ``train_features``' device. A float16/bfloat16 bank stays in its dtype
    (similarities computed in it, votes in float32); other banks are computed in float32 or float64.

    Args:
        train_features: The bank, shape ``(N_train, D)``.
        train_labels: The bank's integer labels in ``[0, num_classes)``, shape ``(N_train,)``.
        test_features: The queries, shape ``(N_test, D)``.
        num_classes: The number of classes C, >= 1.
        k: The number of neighbours, >= 1; clipped to ``N_train``.
        temperature: The temperature T of the votes ``exp(sim / T)``, > 0.
        chunk_size: Test rows are processed ``chunk_size`` at a time, so memory is
            ``O(chunk_size * N_train)``.
        normalized: ``True`` promises unit-norm bank rows, so the bank is used as it is (no normalised
            copy).

    Returns:
        Class scores, shape ``(N_test, num_classes)``.

    Raises:
        ConfigError: If an argument is out of its range, the shapes do not match, the bank is empty or a
            label is out of range.
    """
    check_int_at_least("k", k, 1)
    check_positive("temperature", temperature)
    check_int_at_least("num_classes", num_classes, 1)
    check_int_at_least("chunk_size", chunk_size, 1)
    _check_inputs(train_features, train_labels, test_features, num_classes)
    half = train_features.dtype in (torch.float16, torch.bfloat16)
    dtype = train_features.dtype if half else torch.promote_types(train_features.dtype, torch.float32)
    vote_dtype = torch.promote_types(dtype, torch.float32)
    device = train_features.device
    bank = train_features.to(dtype)
    if not normalized:
        bank = F.normalize(bank, dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    k = min(k, bank.shape[0])
    scores = []
    for chunk in test_features.split(chunk_size):
        queries = F.normalize(chunk.to(device=device, dtype=vote_dtype), dim=1).to(dtype)
        sims, idx = (queries @ bank.T).topk(k, dim=1)
        votes = torch.zeros(queries.shape[0], num_classes, device=device, dtype=vote_dtype)
        scores.append(votes.scatter_add_(1, labels[idx], (sims.to(vote_dtype) / temperature).exp()))
    return torch.cat(scores)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
    normalized: bool = False,
) -> dict[str, float]:
    """Top-1 and top-5 accuracy in percent of :func:`knn_predict`.

    Top-5 uses ``min(5, num_classes)`` guesses.

    Args:
        train_features: The bank, shape ``(N_train, D)``.
        train_labels: The bank's integer labels in ``[0, num_classes)``, shape ``(N_train,)``.
        test_features: The queries, shape ``(N_test, D)``.
        test_labels: The queries' labels, shape ``(N_test,)``.
        num_classes: The number of classes C.
        k: The number of neighbours.
        temperature: The temperature T of the votes.
        chunk_size: Test rows processed at a time.
        normalized: ``True`` promises unit-norm bank rows.

    Returns:
        ``{"top1": ..., "top5": ...}``, in percent.

    Raises:
        ConfigError: If the test set is empty, ``test_labels`` does not match ``test_features``, or
            :func:`knn_predict` refuses its arguments.
    """
    if test_labels.shape != (test_features.shape[0],):
        raise ConfigError(
            f"test_labels must have shape ({test_features.shape[0]},), got {tuple(test_labels.shape)}"
        )
    if test_labels.numel() == 0:
        raise ConfigError("the test set is empty")
    scores = knn_predict(
        train_features, train_labels, test_features, num_classes, k, temperature, chunk_size, normalized
    )
    return topk_accuracy(scores, test_labels)


def topk_accuracy(scores: Tensor, labels: Tensor) -> dict[str, float]:
    """Top-1 and top-5 accuracy in percent of class ``scores`` against ``labels``.

    Top-5 uses ``min(5, C)`` guesses.

    Args:
        scores: Class scores, shape ``(N, C)``.
        labels: True classes, shape ``(N,)``.

    Returns:
        ``{"top1": ..., "top5": ...}``, in percent.
    """
    guesses = scores.topk(min(5, scores.shape[1]), dim=1).indices
    hits = guesses == labels.to(guesses.device).unsqueeze(1)
    return {
        "top1": 100.0 * hits[:, 0].float().mean().item(),
        "top5": 100.0 * hits.any(dim=1).float().mean().item(),
    }
