"""DeepCluster-v2 under torch.distributed: 2 CPU processes (gloo) cluster the bank as one process does.

Each rank writes its own training batches into the memory bank (which all-gathers them), then runs the
epoch-start clustering: k-means on every world-th filled row with all-reduced sums and counts, and each
sample's cluster labelled on one rank and all-reduced. Both ranks must end with the centroids and
clusters of one process that wrote every batch itself.
"""

from __future__ import annotations

import pytest
import torch

from sslib.app import methods
from sslib.app.config import compose
from sslib.distributed import rank, world_size
from sslib.modules.memory import MemoryBank
from tests.helpers.ddp import run_on_ranks

N, DIM, K, BATCH = 64, 16, 6, 5
STEPS = 5  # steps of 2 batches (one per rank); the last batch rewrites the first one's rows
FILLED = (2 * STEPS - 1) * BATCH  # 45 rows: 23 clustered on rank 0, 22 on rank 1; 19 never seen (-1)
LABELERS = ("nearest", "mira")  # DeepCluster-v2's own, and MIRA (whose statistics are all-reduced)


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(indices (BATCH,), embeddings (BATCH, DIM))`` of the training batches, in the epoch's order."""
    g = torch.Generator().manual_seed(0)
    indices = torch.randperm(N, generator=g)[:FILLED]
    indices = torch.cat([indices, indices[:BATCH]])
    z = torch.randn(len(indices), DIM, generator=g)
    return list(zip(indices.split(BATCH), z.split(BATCH), strict=True))


def cluster(labeler: str) -> dict[str, torch.Tensor]:
    """This rank writes its share of :func:`batches` (batch i on rank i % world: each write all-gathers the
    ranks' batches in rank order, so one process writes them in the epoch's order), then the epoch-start
    clustering runs; the prototypes (K, DIM), every sample's cluster (N,) and the bank (N, DIM)."""
    cfg = compose(
        [
            "method=deepclusterv2",
            f"labeler={labeler}",
            f"method.num_prototypes={K}",
            f"method.projector_dims=[32,{DIM}]",
            "method.kmeans_iters=10",
        ]
    )
    model = methods.build(cfg, num_classes=10, n_global=2)
    model.memory = MemoryBank(N, DIM)
    for indices, z in batches()[rank() :: world_size()]:
        model.memory.write(indices, z)
    model.on_train_epoch_start()
    return {
        "prototypes": model.prototypes.prototypes().detach(),
        "clusters": model.clusters,
        "bank": model.memory.embeddings,
    }


def results_of_rank(_: int) -> dict[str, torch.Tensor]:
    """:func:`cluster` with each labeler, keys prefixed by the labeler's name (run under 2-process gloo)."""
    return {f"{lab}/{key}": value for lab in LABELERS for key, value in cluster(lab).items()}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    return run_on_ranks(results_of_rank, tmp_path_factory.mktemp("dc_ddp"))


@pytest.mark.parametrize("labeler", LABELERS)
def test_two_ranks_cluster_the_bank_as_one_process(ranks, labeler):
    torch.manual_seed(0)
    single = cluster(labeler)
    assert int((single["clusters"] >= 0).sum()) == FILLED and len(single["clusters"].unique()) > 2
    for out in ranks:
        assert torch.equal(out[f"{labeler}/bank"], single["bank"])  # the all-gathered writes
        torch.testing.assert_close(out[f"{labeler}/prototypes"], single["prototypes"], rtol=0, atol=1e-6)
        assert torch.equal(out[f"{labeler}/clusters"], single["clusters"])
    for key in ("prototypes", "clusters"):  # bit-identical on both ranks, or their prototypes would drift
        assert torch.equal(ranks[0][f"{labeler}/{key}"], ranks[1][f"{labeler}/{key}"])
