"""The clustering losses against references written from the official codes' averaging (tests/helpers/reference.py):
swapped prediction over multi-crop pairs (MIRA/SwAV/DINO) and DeepCluster-v2's cluster prediction."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sslib.losses import cluster_prediction_loss, swapped_prediction_loss
from tests.helpers.reference import cluster_prediction, swapped_prediction

B, K = 5, 7
CROPS = [(2, 0), (2, 4), (3, 2), (1, 3)]  # (global views, local crops)


def views(n_global: int, n_local: int, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Targets (rows on the simplex) of the global views and student logits of every crop, (B, K) float64."""
    g = torch.Generator().manual_seed(seed)
    targets = [
        torch.softmax(2 * torch.randn(B, K, generator=g, dtype=torch.float64), 1) for _ in range(n_global)
    ]
    logits = [torch.randn(B, K, generator=g, dtype=torch.float64) for _ in range(n_global + n_local)]
    return targets, logits


def assert_matches_swapped_reference(loss_fn, targets, logits, temperature: float) -> None:
    loss = loss_fn(targets, logits, temperature)
    assert loss.item() == pytest.approx(swapped_prediction(targets, logits, temperature), rel=1e-12)


@pytest.mark.parametrize(("n_global", "n_local"), CROPS)
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_swapped_prediction_matches_reference(n_global, n_local, temperature):
    targets, logits = views(n_global, n_local)
    assert swapped_prediction_loss(targets, logits, temperature).dtype == torch.float64
    assert_matches_swapped_reference(swapped_prediction_loss, targets, logits, temperature)


def pair_losses(targets, logits, temperature: float, log_probs=None) -> dict[tuple[int, int], torch.Tensor]:
    """Batch-mean cross-entropy of every (target view v, crop c) pair, c == v included."""
    log_probs = log_probs or (lambda s: F.log_softmax(s / temperature, dim=1))
    return {
        (v, c): -(t * log_probs(s)).sum(1).mean() for v, t in enumerate(targets) for c, s in enumerate(logits)
    }


MUTANTS = {  # plausible bugs the reference comparison must catch
    "pairs with c == v": lambda t, s, tau: torch.stack(list(pair_losses(t, s, tau).values())).mean(),
    "temperature after the log-softmax": lambda t, s, tau: torch.stack(
        [x for (v, c), x in pair_losses(t, s, tau, lambda z: F.log_softmax(z, 1) / tau).items() if c != v]
    ).mean(),
    "sum over pairs": lambda t, s, tau: sum(x for (v, c), x in pair_losses(t, s, tau).items() if c != v),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_the_reference_comparison_fails_a_wrong_pairing_or_temperature(mutant):
    targets, logits = views(2, 2)
    with pytest.raises(AssertionError):
        assert_matches_swapped_reference(MUTANTS[mutant], targets, logits, 0.1)


def test_swapped_prediction_gradient_is_the_closed_form():
    """dL/ds^c_i = (softmax(s^c_i / T) - mean_{v != c} t^v_i) * n_c / (|P| B T), n_c the views paired with c."""
    targets, logits = views(2, 2)
    logits = [s.requires_grad_() for s in logits]
    swapped_prediction_loss(targets, logits, 0.2).backward()
    n_pairs = sum(c != v for v in range(2) for c in range(4))
    for c, s in enumerate(logits):
        others = [t for v, t in enumerate(targets) if v != c]
        expected = (torch.softmax(s.detach() / 0.2, 1) - sum(others) / len(others)) * len(others)
        torch.testing.assert_close(s.grad, expected / (n_pairs * B * 0.2), rtol=1e-12, atol=1e-15)


def test_swapped_prediction_of_half_precision_logits_is_float32():
    targets, logits = views(2, 1)
    half = [s.bfloat16() for s in logits]
    loss = swapped_prediction_loss([t.float() for t in targets], half, 0.1)
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(
        swapped_prediction(targets, [s.double() for s in half], 0.1), rel=1e-6
    )


def test_swapped_prediction_bad_input_is_a_one_line_error():
    targets, logits = views(2, 1)
    for args, match in [
        ((targets, logits, 0.0), "temperature must be a finite number > 0, got 0.0"),
        (
            (targets, logits[:1], 0.1),
            "needs 1 <= target views <= crops and at least 2 crops, got 2 target views and 1",
        ),
        ((targets[:1], logits[:1], 0.1), "got 1 target views and 1 crops"),
        ((targets, [*logits[:2], logits[2][:1]], 0.1), r"one shape, got shapes \[\(1, 7\), \(5, 7\)\]"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            swapped_prediction_loss(*args)
        assert "\n" not in str(err.value)


# --- DeepCluster-v2 --------------------------------------------------------------------------------

CLUSTERS = torch.tensor([3, -1, 0, 6, -1])  # two samples the memory bank has not assigned


def assert_matches_cluster_reference(loss_fn, logits, clusters, temperature: float) -> None:
    loss = loss_fn(logits, clusters, temperature)
    assert loss.item() == pytest.approx(cluster_prediction(logits, clusters, temperature), rel=1e-12)


@pytest.mark.parametrize("n_crops", [1, 4])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_cluster_prediction_matches_reference(n_crops, temperature):
    _, logits = views(n_crops, 0, seed=1)
    assert cluster_prediction_loss(logits, CLUSTERS, temperature).dtype == torch.float64
    assert_matches_cluster_reference(cluster_prediction_loss, logits, CLUSTERS, temperature)
    unassigned = torch.full((B,), -1)
    assert cluster_prediction_loss(logits, unassigned, temperature).item() == 0.0


CLUSTER_MUTANTS = {
    "unassigned samples counted": lambda s, y, tau: (
        sum(F.cross_entropy(x / tau, y, ignore_index=-1, reduction="sum") for x in s) / (len(y) * len(s))
    ),
    "no temperature": lambda s, y, tau: torch.stack(
        [F.cross_entropy(x, y, ignore_index=-1) for x in s]
    ).mean(),
}


@pytest.mark.parametrize("mutant", sorted(CLUSTER_MUTANTS))
def test_the_cluster_reference_comparison_fails_a_wrong_count_or_temperature(mutant):
    _, logits = views(3, 0, seed=1)
    with pytest.raises(AssertionError):
        assert_matches_cluster_reference(CLUSTER_MUTANTS[mutant], logits, CLUSTERS, 0.1)


def test_cluster_prediction_bad_input_is_a_one_line_error():
    _, logits = views(2, 0)
    for args, match in [
        ((logits, CLUSTERS, -1.0), "temperature must be a finite number > 0, got -1.0"),
        (
            (logits, CLUSTERS[:3], 0.1),
            r"clusters must be \(B,\) .* got clusters \(3,\) and logits \[\(5, 7\)",
        ),
        (([], CLUSTERS, 0.1), r"each of >= 1 crops' logits \(B, K\), got clusters \(5,\) and logits \[\]"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            cluster_prediction_loss(*args)
        assert "\n" not in str(err.value)
