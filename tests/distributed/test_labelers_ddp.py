"""Labelers under torch.distributed: 2 CPU processes (gloo) give the rows one process gives."""

from __future__ import annotations

import pytest
import torch

import sslib.labelers as L
from tests.helpers.ddp import run_on_ranks

K = 40
SPLIT = (7, 13)  # unequal shards: global statistics must weight rows, not ranks


def make_embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    """Unit embeddings (sum(SPLIT), 8) and unit prototypes (K, 8)."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(sum(SPLIT), 8, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(K, 8, generator=g), dim=1)
    return x, c


def make_logits() -> torch.Tensor:
    x, c = make_embeddings()
    return x @ c.t()


def labelers() -> dict[str, L.Labeler]:
    return {
        "mira": L.build("mira", n_iters=30),  # auto: the torch path on CPU
        "mira_torch": L.build("mira", n_iters=30, backend="torch"),
        "sinkhorn": L.build("sinkhorn", n_iters=3),
        "dino": L.build("dino", num_prototypes=K),
        "nearest": L.build("nearest"),
    }


def run_all(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """For embeddings ``x``: targets of each labeler on their prototype logits (DINO twice, to cover its centre
    update), label statistics, and k-means centroids started from the prototypes."""
    prototypes = make_embeddings()[1]
    logits = x @ prototypes.t()
    out = {"kmeans_centroids": L.spherical_kmeans(x, prototypes, n_iters=5)}
    for name, lab in labelers().items():
        out[name] = lab(logits)
        if name == "dino":
            out["dino_second_call"] = lab(logits * 0.5)
            out["dino_center"] = lab.center.clone()
    stats = L.label_stats(out["mira"])
    out["stats"] = torch.tensor([stats.marginal_entropy, stats.conditional_entropy, stats.clusters_used])
    return out


def shard_results(rank: int) -> dict[str, torch.Tensor]:
    """:func:`run_all` on rank ``rank``'s shard of the embeddings (run under 2-process gloo)."""
    start = sum(SPLIT[:rank])
    return run_all(make_embeddings()[0][start : start + SPLIT[rank]])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    return run_on_ranks(shard_results, tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("name", ["mira", "mira_torch", "sinkhorn", "dino", "dino_second_call", "nearest"])
def test_sharded_targets_equal_single_process_targets(ranks, name):
    single = run_all(make_embeddings()[0])[name]
    sharded = torch.cat([r[name] for r in ranks])
    assert sharded.shape == single.shape
    assert (sharded - single).abs().max() < 1e-6


def test_dino_centre_label_stats_and_kmeans_centroids_are_global(ranks):
    single = run_all(make_embeddings()[0])
    for r in ranks:
        assert torch.allclose(r["dino_center"], single["dino_center"], atol=1e-7)
        assert torch.allclose(r["stats"], single["stats"], atol=1e-5)
        assert torch.allclose(r["kmeans_centroids"], single["kmeans_centroids"], atol=1e-6)


def test_sharding_matters_without_all_reduce():
    """Control: labelling one shard alone differs from the global result (the test can fail)."""
    logits = make_logits()
    alone = L.build("mira", n_iters=30)(logits[: SPLIT[0]])
    together = L.build("mira", n_iters=30)(logits)[: SPLIT[0]]
    assert (alone - together).abs().max() > 1e-3
