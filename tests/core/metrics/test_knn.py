"""Weighted kNN against scikit-learn and a hand-computed vote; feature extraction."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from sslib.metrics import extract_features, knn_accuracy, knn_predict


def _random_split(num_classes: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    train = torch.randn(200, 16, generator=g)
    test = torch.randn(100, 16, generator=g)
    train_labels = torch.randint(0, num_classes, (200,), generator=g)
    test_labels = torch.randint(0, num_classes, (100,), generator=g)
    return train, train_labels, test, test_labels


def test_k1_matches_sklearn_cosine_nearest_neighbour():
    train, train_labels, test, _ = _random_split()
    sk = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(train.numpy(), train_labels.numpy())
    ours = knn_predict(train, train_labels, test, num_classes=5, k=1, chunk_size=7).argmax(dim=1)
    assert torch.equal(ours, torch.from_numpy(sk.predict(test.numpy())))


def test_chunking_does_not_change_scores():
    train, train_labels, test, _ = _random_split()
    whole = knn_predict(train, train_labels, test, num_classes=5, k=10)
    chunked = knn_predict(train, train_labels, test, num_classes=5, k=10, chunk_size=13)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)  # BLAS blocking differs per chunk


def test_weighted_vote_matches_hand_computation():
    # Unnormalised features; cosine similarities to the query (2, 0) are 1, 1/sqrt(2), 0, -1.
    train = torch.tensor([[3.0, 0.0], [2.0, 2.0], [0.0, 0.5], [-4.0, 0.0]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2])
    query = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    scores = knn_predict(train, labels, query, num_classes=3, k=3, temperature=0.5)
    want = torch.tensor([[math.exp(2.0), math.exp(math.sqrt(2.0)) + 1.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(scores, want)
    assert scores.argmax().item() == 0  # similarity weighting beats the 2-vs-1 majority
    hot = knn_predict(train, labels, query, num_classes=3, k=3, temperature=100.0)
    assert hot.argmax().item() == 1  # at high temperature votes are near-uniform: majority wins


def test_k_is_clipped_to_bank_size():
    train, train_labels, test, _ = _random_split()
    scores = knn_predict(train, train_labels, test, num_classes=5, k=1000, temperature=1.0)
    sims = nn.functional.normalize(test, dim=1) @ nn.functional.normalize(train, dim=1).T
    torch.testing.assert_close(scores.sum(dim=1), sims.exp().sum(dim=1))


def test_knn_accuracy():
    train, train_labels, test, test_labels = _random_split(num_classes=10)
    acc = knn_accuracy(train, train_labels, test, test_labels, num_classes=10)
    assert set(acc) == {"top1", "top5"}
    assert 0.0 <= acc["top1"] <= acc["top5"] <= 100.0
    assert acc["top5"] > acc["top1"]

    # Test points equal to training points are their own nearest neighbour.
    perfect = knn_accuracy(train, train_labels, train[:50], train_labels[:50], num_classes=10, k=1)
    assert perfect == {"top1": 100.0, "top5": 100.0}
    few = knn_accuracy(train[:, :3], train_labels % 3, test[:, :3], test_labels % 3, num_classes=3)
    assert few["top5"] == 100.0


def test_prenormalised_bank_is_used_as_it_is():
    train, train_labels, test, _ = _random_split()
    unit = nn.functional.normalize(train.double(), dim=1)
    scores = knn_predict(unit, train_labels, test, num_classes=5, k=10)
    as_is = knn_predict(unit, train_labels, test, num_classes=5, k=10, normalized=True)
    torch.testing.assert_close(as_is, scores, rtol=1e-12, atol=0.0)  # renormalising moves the last bits
    assert not torch.equal(knn_predict(train.double(), train_labels, test, 5, k=10, normalized=True), scores)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_bank_gives_float32_scores_close_to_float64(dtype):
    """With k = N_train (no neighbour selection to flip), class scores from a half-precision bank stay
    within 0.1% (float16, 11-bit mantissa) or 1% (bfloat16, 8-bit) of float64 at T = 0.5."""
    train, train_labels, test, _ = _random_split()
    bank = nn.functional.normalize(train, dim=1).to(dtype)
    scores = knn_predict(bank, train_labels, test, num_classes=5, k=200, temperature=0.5, normalized=True)
    exact = knn_predict(train.double(), train_labels, test, num_classes=5, k=200, temperature=0.5)
    assert scores.dtype == torch.float32
    rtol = 1e-3 if dtype == torch.float16 else 1e-2
    torch.testing.assert_close(scores, exact.float(), rtol=rtol, atol=0.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "k must"),
        ({"temperature": 0.0}, "temperature"),
        ({"test_features": torch.randn(4, 8)}, "feature dims"),
        ({"train_labels": torch.full((200,), 5)}, "train_labels"),
    ],
)
def test_knn_rejects_bad_arguments(kwargs, match):
    train, train_labels, test, _ = _random_split()
    args = {"train_features": train, "train_labels": train_labels, "test_features": test, "num_classes": 5}
    with pytest.raises(ValueError, match=match) as err:
        knn_predict(**{**args, **kwargs})
    assert "\n" not in str(err.value)


class _ModeProbe(nn.Module):
    """Linear map that records the train/eval mode it was called in."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.seen_modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_modes.append(self.training)
        return self.fc(x)


@pytest.mark.parametrize("training", [True, False])
def test_extract_features(training):
    images, labels = torch.randn(10, 6, dtype=torch.float64), torch.arange(10)
    loader = DataLoader(TensorDataset(images, labels), batch_size=4)
    backbone = _ModeProbe().double().train(training)

    features, got_labels = extract_features(backbone, loader, device="cpu")
    assert features.shape == (10, 3) and features.dtype == torch.float32 and features.device.type == "cpu"
    assert torch.equal(got_labels, labels)
    assert backbone.seen_modes == [False, False, False]
    assert backbone.training is training
    with torch.no_grad():
        torch.testing.assert_close(features, backbone.fc(images).float())


def test_extract_features_rejects_non_2d_output_and_restores_mode():
    backbone = nn.Unflatten(1, (2, 3)).train()
    loader = [(torch.randn(2, 6), torch.zeros(2))]
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        extract_features(backbone, loader, device="cpu")
    assert backbone.training
