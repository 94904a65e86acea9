"""Global-batch equivalence of whole optimisation steps: 2 gloo ranks x B/2 with synchronised BatchNorm
give the loss, gradients and updated parameters (and BatchNorm statistics) of one process x B.

Each step runs the method's own ``ssl_step``, the backward, DDP's gradient averaging (an all-reduce
divided by the world size), and the run's optimiser and schedule (:func:`sslib.app.optimizer.configure`,
whose lr scales with the global batch). SwAV's queue is kept per device (docs/clusters.md): with
``method.queue.length`` divided by the number of devices, the ranks' queues together hold the rows of
the single process's queue, and since Sinkhorn-Knopp sums over all rows of all ranks the second step,
which labels batch and queue together, is equivalent too. DeepCluster-v2 starts its epoch first: the
memory bank is filled (every write gathers all ranks' rows) and k-means clusters it, the rows split over
the ranks; its steps then predict those clusters.
"""

from __future__ import annotations

import pytest
import torch

from sslib.app import methods
from sslib.app.config import compose
from sslib.app.methods.deepcluster import DeepClusterV2
from sslib.app.optimizer import configure
from sslib.distributed import AllReduceBatchNorm, all_reduce, convert_batchnorm
from sslib.modules.memory import MemoryBank
from tests.helpers.ddp import run_on_ranks

BATCH, SIZE, STEPS = 8, 8, 2  # global batch, crop side, steps per run
COMMON = ["data.global_crops.size=8", "method.projector_dims=[16,8]", "optim.warmup_epochs=0"]
CLUSTERING = ["method.num_prototypes=6"]
METHODS = {
    "mira": CLUSTERING,
    "swav": [*CLUSTERING, "method.queue.length=8", "method.queue.start_epoch=0"],  # a global length of 8
    "dino": [*CLUSTERING, "method.projector_dims=[16,16,8]"],
    "deepclusterv2": [*CLUSTERING, "method.kmeans_iters=3"],
    "byol": ["method.predictor_dims=[16,8]"],
    "barlow": [],
    "simclr": [],
}

pytestmark = pytest.mark.usefixtures("one_thread")


def indices(step: int) -> torch.Tensor:
    """The dataset indices of the step's global batch: every step sees new samples (N = STEPS x BATCH)."""
    return torch.arange(step * BATCH, (step + 1) * BATCH)


def start_epoch(model: DeepClusterV2, rows: slice) -> None:
    """DeepCluster-v2's epoch start: the memory bank filled from this rank's rows of every step's first view
    (each write all-gathers the ranks' rows, as ``init_memory`` does), then k-means on the bank."""
    model.memory = MemoryBank(STEPS * BATCH, model.cfg.method.projector_dims[-1], dtype=torch.float64)
    with torch.no_grad():
        for step in range(STEPS):
            model.memory.write(indices(step)[rows], model.projector(model.backbone(crops(step)[0][rows])))
    model.on_train_epoch_start()


def crops(step: int) -> list[torch.Tensor]:
    """The step's two global views of the global batch, (BATCH, 3, SIZE, SIZE) each, float64."""
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64) for _ in range(2)]


def run_steps(
    name: str, world: int, rank: int, sync_bn: bool = True, steps: int = STEPS
) -> dict[str, torch.Tensor]:
    """``steps`` steps of ``name`` on rank ``rank``'s rows of each batch: the last loss, gradients and the
    updated state (parameters and buffers), as flat tensors keyed by name."""
    per_rank = BATCH // world
    overrides = [f"data.batch_size={per_rank}", *COMMON, *METHODS[name]]
    if name == "swav":
        overrides[-2] = f"method.queue.length={8 // world}"  # per device: the global length / devices
    cfg = compose([f"method={name}", *overrides])
    torch.manual_seed(0)  # the same initial weights on every rank (DDP broadcasts rank 0's)
    model = methods.build(cfg, num_classes=10, n_global=2).double()
    if sync_bn and world > 1:
        convert_batchnorm(model)
    optimizer, scheduler = configure(cfg, model.ssl_modules(), model.probe, world, 10, 5.0)
    rows = slice(rank * per_rank, (rank + 1) * per_rank)
    if isinstance(model, DeepClusterV2):
        start_epoch(model, rows)
    for step in range(steps):
        loss, _, _ = model.ssl_step([c[rows] for c in crops(step)], indices(step)[rows])
        optimizer.zero_grad()
        loss.backward()
        grads = {n: all_reduce(p.grad).div_(world) for n, p in model.named_parameters() if p.grad is not None}
        optimizer.step()
        scheduler.step()
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    return {"loss": loss.detach(), **{f"grad/{k}": v for k, v in grads.items()}, **state}


def rank_steps(rank: int) -> dict[str, torch.Tensor]:
    """Every method on this rank (one process group for all), and BYOL without synchronised BatchNorm."""
    out = {f"{name}/{k}": v for name in METHODS for k, v in run_steps(name, 2, rank).items()}
    out.update({f"byol-per-device-bn/{k}": v for k, v in run_steps("byol", 2, rank, sync_bn=False).items()})
    return out


def by_method(result: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    return {k.split("/", 1)[1]: v for k, v in result.items() if k.split("/", 1)[0] == name}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    return run_on_ranks(rank_steps, tmp_path_factory.mktemp("steps"))


@pytest.fixture(scope="module")
def one_process() -> dict[str, dict[str, torch.Tensor]]:
    return {name: run_steps(name, 1, 0) for name in METHODS}


def assert_equivalent(ranks: list[dict], single: dict) -> None:
    # Each rank's loss is the mean over its rows (Barlow Twins': the global loss on every rank); their
    # mean, which Lightning logs, is the loss of the whole batch.
    loss = torch.stack([r["loss"] for r in ranks]).mean()
    torch.testing.assert_close(loss, single["loss"], rtol=1e-5, atol=1e-7)
    assert ranks[0].keys() == single.keys()
    for key in sorted(single.keys() - {"loss"}):
        if not key.startswith("queue."):  # averaged gradients, hence parameters, are the same on all ranks
            torch.testing.assert_close(
                ranks[0][key], ranks[1][key], rtol=0, atol=0, msg=f"{key} differs by rank"
            )
            torch.testing.assert_close(ranks[0][key], single[key], rtol=1e-4, atol=1e-6, msg=key)
    if "queue.embeddings" in single:  # per device: each rank's queue holds its own rows of the batch
        queues = torch.cat([r["queue.embeddings"] for r in ranks], dim=1)  # (views, length, d)
        torch.testing.assert_close(queues, single["queue.embeddings"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_ranks_take_the_step_of_one_process_on_the_whole_batch(name, two_ranks, one_process):
    assert_equivalent([by_method(r, name) for r in two_ranks], one_process[name])


def test_control_without_sync_batchnorm_the_step_differs(two_ranks, one_process):
    """Per-device BatchNorm statistics (no conversion) change the step: the test above can fail."""
    with pytest.raises(AssertionError):
        assert_equivalent([by_method(r, "byol-per-device-bn") for r in two_ranks], one_process["byol"])


def test_all_reduce_batchnorm_in_one_process_is_batchnorm():
    """Without several processes the converted layer is torch's BatchNorm, running statistics included."""
    torch.manual_seed(0)
    reference = torch.nn.BatchNorm2d(4)
    converted = convert_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)))[0]
    assert isinstance(converted, AllReduceBatchNorm)
    x = torch.randn(5, 4, 6, 6) * 3 + 1
    torch.testing.assert_close(converted(x), reference(x))
    torch.testing.assert_close(converted.state_dict(), reference.state_dict())
