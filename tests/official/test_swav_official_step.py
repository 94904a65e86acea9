"""Real training steps of SwAV and DeepCluster-v2 against float64 references of the official code.

The references are written from facebookresearch/swav at commit 06b1b7c, not from sslib:

- model (``src/resnet50.py``): ``forward`` (L308-323) runs the backbone once per run of consecutive
  crops of one size (the two 8x8 global crops together, then the two 4x4 local crops), the projection
  head once on all features; ``forward_head`` (L297-306) L2-normalises the embedding (L302) and scores
  it with a bias-free ``nn.Linear`` of prototypes (L217). The official head's first Linear has a bias
  before its BatchNorm (L206) where sslib's has none: in training the BatchNorm cancels that bias in
  the forward pass and in every other gradient (only its running mean, used in eval mode, carries it),
  so the reference is built from deep copies of sslib's initial modules (same architecture) and the
  difference does not enter the comparison;
- SwAV step (``main_swav.py``): the prototypes renormalised to unit rows at every iteration's start
  (L277-281); for each crop to assign (0, 1) the codes of ``distributed_sinkhorn`` (L354-376, one
  process: ``reference.swav_sinkhorn``) on the detached scores, with the queue's scores by the current
  prototypes prepended once its last row is non-zero (L294-301, ``use_the_queue`` sticks for the epoch)
  and the batch's normalised embeddings pushed in front after scoring (L302-304), the batch's rows kept
  (L306-307), the queue's length rounded down to a multiple of the global batch (L212-213); the loss
  the mean over the two assigned crops of the mean over the other crops of
  ``-mean_b sum_k q log softmax(out / 0.1)`` (L289-315); the prototypes' gradient dropped while
  ``iteration < freeze_prototypes_niters`` (L324-328);
- optimiser (L171-177): ``SGD(momentum=0.9, weight_decay=wd)`` over *every* parameter (biases and
  BatchNorm included) wrapped in apex's ``LARC(trust_coefficient=0.001, clip=False)``: per tensor with
  a gradient, when ``||p|| != 0 and ||g|| != 0``, ``g <- (g + wd p) * 0.001 ||p|| / (||g|| + wd ||p||
  + 1e-8)``, then SGD with its weight decay set to 0; the lr schedule ``np.linspace(start_warmup,
  base_lr, W)`` then a cosine from ``base_lr`` to ``final_lr`` over the remaining ``T - W``
  iterations (L178-182);
- DeepCluster-v2 (``main_deepclusterv2.py``, one head on crop 0): the same model and optimiser
  (L163-174); ``init_memory`` (L317-342), the model in train mode on each batch's crop 0 alone;
  ``cluster_memory`` (L345-391), spherical k-means rounds then a final nearest-centroid step, the
  centroids copied into the prototypes; the loss ``CrossEntropyLoss`` of ``prototypes(out) / 0.1`` of
  all crops' rows against each sample's cluster repeated per crop (L249, L266-276); the prototypes
  never receive a gradient (``freeze_prototypes_niters`` 1e10, L76, L281-286); the batch's crop-0
  embeddings written to the memory (L288-293).

sslib runs the same steps through Lightning in float64 on the CPU (``crop_forward=resolution``, LARS
with ``exclude_bias_norm=false``, ``trust_ratio=paper``, ``eps=1e-8``, ``warmup_ends_at_peak``), its
online linear probe in its own parameter group (it cannot move the SSL parameters, which alone are
compared).

A queue length that is not a multiple of the batch, which the official code rounds down (main_swav.py
L212-213), is refused by sslib with a one-line error (``test_a_queue_of_part_of_a_batch_is_refused``).
"""

from __future__ import annotations

import copy
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslib.app import methods
from sslib.app.config import compose
from tests.helpers.official_step import float64_trainer, multicrop_batches, record_losses
from tests.helpers.reference import swav_sinkhorn

pytestmark = pytest.mark.usefixtures("one_thread")

B, K, FEAT, N_CROPS = 8, 5, 4, 4  # 2 global 8x8 crops, 2 local 4x4 crops
TAU, EPSILON, SINKHORN_ITERS = 0.1, 0.05, 3
BASE_LR, START_LR, FINAL_LR = 0.6, 0.15, 0.06  # main_swav.py's base_lr, start_warmup, final_lr
WD, TRUST, LARC_EPS, MOMENTUM = 1e-3, 0.001, 1e-8, 0.9
ASSIGN = (0, 1)  # crops_for_assign
TOL = {"rtol": 1e-9, "atol": 1e-12}


def tiny_backbone() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, FEAT, 3, padding=1, bias=False),
        nn.BatchNorm2d(FEAT),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def batches(steps: int, seed: int = 1) -> list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
    """``steps`` batches of B images with the indices a permutation of ``range(steps * B)``."""
    return multicrop_batches(steps, B, seed, permuted_indices=True)


# --- the official behaviour ------------------------------------------------------------------------


def official_lr_schedule(warmup: int, total: int) -> list[float]:
    """main_swav.py L178-182 with ``len(train_loader) * warmup_epochs = warmup`` and
    ``len(train_loader) * epochs = total``: a linspace warm-up ending at the base lr, then a cosine."""
    ramp = [
        START_LR + (BASE_LR - START_LR) * i / (warmup - 1) if warmup > 1 else START_LR for i in range(warmup)
    ]
    span = total - warmup
    decay = [FINAL_LR + 0.5 * (BASE_LR - FINAL_LR) * (1 + math.cos(math.pi * t / span)) for t in range(span)]
    return ramp + decay


def official_forward(net: nn.ModuleDict, crops: list[torch.Tensor]) -> torch.Tensor:
    """resnet50.py ``forward``: the backbone per run of equally-sized crops, the head on all rows; the
    L2-normalised embeddings (n_crops * B, d), crop-major (the prototype scores are ``emb @ W^T``)."""
    feats, start = [], 0
    while start < len(crops):
        end = start
        while end < len(crops) and crops[end].shape[-1] == crops[start].shape[-1]:
            end += 1
        feats.append(net["backbone"](torch.cat(crops[start:end])))
        start = end
    return F.normalize(net["projector"](torch.cat(feats)), dim=1, p=2)


def larc_sgd_step(params: list[torch.Tensor], buffers: list[torch.Tensor | None], lr: float) -> None:
    """apex ``LARC(trust_coefficient=0.001, clip=False)`` around ``SGD(momentum=0.9, weight_decay=WD)``."""
    with torch.no_grad():
        for i, p in enumerate(params):
            if p.grad is None:  # SGD and LARC skip it, and its momentum buffer is left alone
                continue
            d = p.grad
            p_norm, g_norm = p.norm(), d.norm()
            if p_norm != 0 and g_norm != 0:
                d = (d + WD * p) * (TRUST * p_norm / (g_norm + p_norm * WD + LARC_EPS))
            buffers[i] = d.clone() if buffers[i] is None else buffers[i].mul_(MOMENTUM).add_(d)
            p.sub_(lr * buffers[i])


def rows(x: torch.Tensor, crop: int) -> torch.Tensor:
    return x[crop * B : (crop + 1) * B]


def official_swav_run(
    start: nn.ModuleDict, prototypes: torch.Tensor, data, freeze_iters: int, queue_length: int, lrs
):
    """main_swav.py ``train`` over ``data`` (one epoch, the queue started): the final network, prototypes
    (right after the last optimiser step, not renormalised), queue, the losses and whether each step used
    the queue."""
    net = copy.deepcopy(start)
    weight = prototypes.detach().clone().requires_grad_(True)
    params = [*net.parameters(), weight]
    buffers: list[torch.Tensor | None] = [None] * len(params)
    queue_length -= queue_length % B  # L212-213: rounded down to a multiple of the (global) batch
    queue = (
        torch.zeros(len(ASSIGN), queue_length, weight.shape[1], dtype=weight.dtype) if queue_length else None
    )
    use_the_queue = False
    losses, used = [], []
    for it, (crops, _, _) in enumerate(data):
        with torch.no_grad():
            weight.copy_(F.normalize(weight, dim=1, p=2))
        emb = official_forward(net, crops)
        out = emb @ weight.T
        emb = emb.detach()
        loss = 0.0
        for i, crop in enumerate(ASSIGN):
            with torch.no_grad():
                scores = rows(out, crop).detach()
                if queue is not None:
                    if use_the_queue or bool((queue[i, -1] != 0).any()):
                        use_the_queue = True
                        scores = torch.cat([queue[i] @ weight.T, scores])
                    queue[i] = torch.cat([rows(emb, crop), queue[i, :-B]])
                q = swav_sinkhorn(scores, EPSILON, SINKHORN_ITERS)[-B:]
            subloss = 0.0
            for v in range(N_CROPS):
                if v != crop:
                    subloss = subloss - (q * F.log_softmax(rows(out, v) / TAU, dim=1)).sum(dim=1).mean()
            loss = loss + subloss / (N_CROPS - 1)
        loss = loss / len(ASSIGN)
        losses.append(float(loss.detach()))
        used.append(use_the_queue)
        for p in params:
            p.grad = None
        loss.backward()
        if it < freeze_iters:
            weight.grad = None
        larc_sgd_step(params, buffers, lrs[it])
    return net, weight.detach(), queue, losses, used


def official_init_memory(start: nn.ModuleDict, data, size: int) -> tuple[nn.ModuleDict, torch.Tensor]:
    """main_deepclusterv2.py ``init_memory`` (L317-342) for one crop to assign (crop 0): without grad, in
    train mode (batch statistics; the running statistics move), each batch's crop 0 alone through the
    model; the network after the pass and the bank of normalised embeddings (size, d)."""
    net = copy.deepcopy(start)
    bank = torch.zeros(size, net["projector"][-1].out_features, dtype=torch.float64)
    with torch.no_grad():
        for crops, _, indices in data:
            bank[indices] = official_forward(net, [crops[0]])
    return net, bank


def official_kmeans(bank: torch.Tensor, centroids: torch.Tensor, n_iters: int):
    """main_deepclusterv2.py ``cluster_memory`` (L345-391) for one head in one process: ``n_iters`` rounds
    of (E step, M step: a used centroid becomes its rows' mean, then every centroid is normalised), then the
    final E step; the centroids (the prototypes, L389) and the assignments."""
    for n_iter in range(n_iters + 1):
        assignments = (bank @ centroids.T).max(dim=1).indices
        if n_iter == n_iters:
            return centroids, assignments
        centroids = centroids.clone()
        for k in range(len(centroids)):
            members = bank[assignments == k]
            if len(members):
                centroids[k] = members.sum(dim=0) / len(members)
        centroids = F.normalize(centroids, dim=1, p=2)
    raise AssertionError("unreachable")


def official_deepcluster_step(start: nn.ModuleDict, prototypes: torch.Tensor, crops, targets, lr: float):
    """One iteration of main_deepclusterv2.py ``train`` with one head: the network after the step, the loss
    and the crop-0 embeddings the memory bank takes for the batch (L288-293)."""
    net = copy.deepcopy(start)
    emb = official_forward(net, crops)
    out = emb @ prototypes.T
    loss = F.cross_entropy(out / TAU, targets.repeat(len(crops)), ignore_index=-100)
    params = list(net.parameters())  # the prototypes' gradient is None at every iteration: LARC skips them
    loss.backward()
    larc_sgd_step(params, [None] * len(params), lr)
    return net, float(loss.detach()), rows(emb, 0).detach()


# --- sslib -------------------------------------------------------------------------------------------


def sslib_cfg(tmp_path, method: str, steps: int, warmup: int, *overrides: str):
    """The run config of ``method`` with the official optimiser: ``warmup`` of ``steps`` iterations in one
    epoch (``optim.warmup_epochs = warmup / steps``, so ``W = round(warmup_epochs * steps_per_epoch)``)."""
    return compose(
        [
            f"method={method}",
            "recipe=null",
            f"run_dir={tmp_path}",
            "channels_last=false",
            f"data.batch_size={B}",
            f"method.num_prototypes={K}",
            "method.projector_dims=[6,3]",
            "optim.name=lars",
            f"optim.lr={BASE_LR}",
            "optim.scale_lr=false",
            f"optim.weight_decay={WD}",
            f"optim.momentum={MOMENTUM}",
            "optim.exclude_bias_norm=false",
            f"optim.warmup_epochs={warmup / steps}",
            f"optim.warmup_start_ratio={START_LR / BASE_LR}",
            "optim.warmup_ends_at_peak=true",
            f"optim.final_lr_ratio={FINAL_LR / BASE_LR}",
            f"optim.kwargs.eta={TRUST}",
            "optim.kwargs.clip_lr=false",
            "optim.kwargs.trust_ratio=paper",
            f"optim.kwargs.eps={LARC_EPS}",
            *overrides,
        ]
    )


def swav_cfg(tmp_path, steps: int, warmup: int, freeze_steps: int, queue_length: int = 0, *overrides: str):
    return sslib_cfg(
        tmp_path,
        "swav",
        steps,
        warmup,
        f"method.freeze_prototypes_steps={freeze_steps}",
        f"method.queue.length={queue_length}",
        "method.queue.start_epoch=0",
        f"labeler.epsilon={EPSILON}",
        f"labeler.n_iters={SINKHORN_ITERS}",
        *overrides,
    )


def trainer(steps: int, **kwargs) -> L.Trainer:
    return float64_trainer(max_steps=steps, max_epochs=1, **kwargs)


def build(cfg, monkeypatch):
    torch.manual_seed(0)
    monkeypatch.setattr("sslib.app.methods.base.build_backbone", lambda cfg: (tiny_backbone(), FEAT))
    model = methods.build(cfg, num_classes=3, n_global=2).double()
    start = nn.ModuleDict(
        {"backbone": copy.deepcopy(model.backbone), "projector": copy.deepcopy(model.projector)}
    )
    return model, start


def fit_swav(model, data) -> list[float]:
    losses = record_losses(model)
    trainer(len(data)).fit(model, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
    return losses


def assert_same_network(model, net: nn.ModuleDict) -> None:
    """Every backbone and projector parameter and buffer (BatchNorm statistics, batch counts)."""
    for part in ("backbone", "projector"):
        for name, value in getattr(model, part).state_dict().items():
            torch.testing.assert_close(value, net[part].state_dict()[name], **TOL, msg=f"{part}.{name}")


# --- tests ---------------------------------------------------------------------------------------------


def test_swav_steps_equal_the_official_behaviour(tmp_path, monkeypatch):
    """4 iterations, warm-up W = 2 of T = 4 (lr 0.15, 0.6, 0.6, 0.33: the linspace's last warm-up step is
    at the peak, then the cosine), no queue, the prototypes frozen at iteration 0 only, renormalised at
    every start; apex LARC on every tensor."""
    steps, warmup = 4, 2
    lrs = official_lr_schedule(warmup, steps)
    assert lrs == pytest.approx([0.15, 0.6, 0.6, 0.33])
    cfg = swav_cfg(tmp_path, steps, warmup, freeze_steps=1)
    assert cfg.method.crop_forward == "resolution" and cfg.method.prototype_parametrization == "renormalize"
    model, start = build(cfg, monkeypatch)
    prototypes = model.prototypes.layer.weight.detach().clone()
    data = batches(steps)

    losses = fit_swav(model, data)

    net, ref_prototypes, _, ref_losses, _ = official_swav_run(start, prototypes, data, 1, 0, lrs)
    assert losses == pytest.approx(ref_losses, rel=1e-10, abs=1e-12)
    # sslib renormalises at the batch start: after fit, the weight is the last step's raw result
    got = model.prototypes.layer.weight.detach()
    torch.testing.assert_close(got, ref_prototypes, **TOL)
    assert (got.norm(dim=1) - 1).abs().max() > 1e-9  # the step's result, not yet renormalised
    assert_same_network(model, net)


@pytest.mark.parametrize(
    ("queue_length", "used"),
    [
        (8, [False, True, True]),
        (16, [False, False, True]),
    ],
    ids=["one_batch", "two_batches"],
)
def test_swav_queue_is_used_once_full_as_the_official_code(tmp_path, monkeypatch, queue_length, used):
    """3 iterations (W = 1 of T = 3: lr 0.15, 0.6, 0.33) with a queue started at epoch 0. A queue of one
    batch is empty at iteration 0 and full from iteration 1; one of two batches is half filled at
    iteration 1, which the official rule (last row non-zero) labels without it, and full at 2."""
    steps, warmup = 3, 1
    lrs = official_lr_schedule(warmup, steps)
    assert lrs == pytest.approx([0.15, 0.6, 0.33])
    model, start = build(swav_cfg(tmp_path, steps, warmup, 1, queue_length), monkeypatch)
    prototypes = model.prototypes.layer.weight.detach().clone()
    data = batches(steps, seed=2)

    losses = fit_swav(model, data)

    net, ref_prototypes, queue, ref_losses, ref_used = official_swav_run(
        start, prototypes, data, 1, queue_length, lrs
    )
    assert ref_used == used
    assert losses == pytest.approx(ref_losses, rel=1e-10, abs=1e-12)
    torch.testing.assert_close(model.prototypes.layer.weight.detach(), ref_prototypes, **TOL)
    assert_same_network(model, net)
    torch.testing.assert_close(model.queue.embeddings, queue, **TOL)


def test_weight_norm_prototypes_differ_from_the_official_step(tmp_path, monkeypatch):
    """``prototype_parametrization=weight_norm`` has SwAV's forward pass but not its prototype update: the
    direction ``v`` of ``w = v / ||v||`` gets only the tangential part of W's gradient, so LARC's trust
    ratio, which divides by the gradient's norm, is larger than the official one, whose gradient keeps
    its radial part (the renormalisation removes only the step's radial part, afterwards). After one
    unfrozen iteration from the same unit prototypes (``v`` set to unit rows) the renormalised prototypes
    move by 4.56e-4 relative in the official step and differ from it by 1.43e-4 (measured), 31% of the
    move, while the loss, backbone and projector agree (their gradients do not depend on the
    parametrisation). With sslib's initial ``v`` (rows of norm 0.43-0.73, whose angular steps scale as
    ``1 / ||v_k||^2``) the difference is 2.63e-4. Hence SwAV's ``renormalize`` form."""
    cfg = swav_cfg(tmp_path, 1, 0, 0, 0, "method.prototype_parametrization=weight_norm")
    model, start = build(cfg, monkeypatch)
    direction = model.prototypes.layer.parametrizations.weight.original1
    with torch.no_grad():
        direction.copy_(F.normalize(direction, dim=1))
    prototypes = model.prototypes.prototypes().detach().clone()
    data = batches(1, seed=3)

    losses = fit_swav(model, data)

    net, ref_prototypes, _, ref_losses, _ = official_swav_run(start, prototypes, data, 0, 0, [BASE_LR])
    assert losses == pytest.approx(ref_losses, rel=1e-10, abs=1e-12)
    assert_same_network(model, net)
    got = model.prototypes.prototypes().detach()  # unit rows: the official weight after renormalisation
    official = F.normalize(ref_prototypes, dim=1)
    moved = float((official - F.normalize(prototypes, dim=1)).norm() / official.norm())
    gap = float((got - official).norm() / official.norm())
    assert moved == pytest.approx(4.56e-4, rel=0.01)  # the official step
    assert gap == pytest.approx(1.43e-4, rel=0.01)  # far above the 1e-9 of the other comparisons


class Data(L.LightningDataModule):
    """The training batches, and ``train_set`` for DeepCluster-v2's memory size."""

    def __init__(self, data) -> None:
        super().__init__()
        self.data = data
        self.train_set = range(sum(len(b[2]) for b in data))

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.data, batch_size=None)


class StepStart(L.Callback):
    """DeepCluster-v2's network at train start, and its state as the first iteration starts (callbacks run
    before the module's hooks): the network after the memory-bank pass, the bank, the k-means prototypes
    and the samples' clusters."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.initial = copy.deepcopy(
            nn.ModuleDict({"backbone": pl_module.backbone, "projector": pl_module.projector})
        )

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.net = copy.deepcopy(
            nn.ModuleDict({"backbone": pl_module.backbone, "projector": pl_module.projector})
        )
        self.bank = pl_module.memory.embeddings.clone()
        self.prototypes = pl_module.prototypes.prototypes().detach().clone()
        self.clusters = pl_module.clusters.clone()


def test_deepclusterv2_step_equals_the_official_behaviour(tmp_path, monkeypatch):
    """One iteration of ``method=deepclusterv2`` (lr = base: W = 0 of T = 1), one head of K = 5 on a bank
    of 16 samples (2 batches). sslib fills its memory (``on_train_start``) and clusters it
    (``on_train_epoch_start``) through Lightning. The reference follows ``init_memory`` for the bank and
    the network, ``cluster_memory`` for the prototypes and clusters from the initial centroids sslib draws
    (the official draw uses another random stream), and main_deepclusterv2.py L262-293 for the iteration."""
    cfg = sslib_cfg(tmp_path, "deepclusterv2", 1, 0, "method.kmeans_iters=1")  # not converged
    model, _ = build(cfg, monkeypatch)
    data = batches(2, seed=4)
    probe = StepStart()
    losses = record_losses(model)
    trainer(1, callbacks=[probe]).fit(model, datamodule=Data(data))

    start, bank = official_init_memory(probe.initial, data, 2 * B)
    torch.testing.assert_close(probe.bank, bank, **TOL)
    assert_same_network(probe.net, start)  # the bank pass moved the BatchNorm running statistics alike
    # the initial centroids as sslib draws them (the official code draws K rows of rank 0's memory with
    # the global RNG), then the official iterations from them
    first = torch.randperm(2 * B, generator=torch.Generator().manual_seed(cfg.seed))[:K]
    centroids, assignments = official_kmeans(bank, bank[first], cfg.method.kmeans_iters)
    torch.testing.assert_close(probe.prototypes, centroids, **TOL)
    assert torch.equal(probe.clusters, assignments)
    crops, _, indices = data[0]
    targets = probe.clusters[indices]
    assert len(targets.unique()) > 1
    net, ref_loss, written = official_deepcluster_step(start, probe.prototypes, crops, targets, BASE_LR)
    assert losses == pytest.approx([ref_loss], rel=1e-10, abs=1e-12)
    bank[indices] = written
    torch.testing.assert_close(model.memory.embeddings, bank, **TOL)
    torch.testing.assert_close(model.prototypes.prototypes(), probe.prototypes, rtol=0, atol=1e-15)
    assert_same_network(model, net)


def test_a_queue_of_part_of_a_batch_is_refused(tmp_path, monkeypatch):
    with pytest.raises(
        ValueError,
        match=r"^method.queue.length=12 must be a multiple of data.batch_size=8 \(SwAV's queue holds whole "
        r"batches\), e.g. 8 or 16$",
    ):
        build(swav_cfg(tmp_path, 3, 1, 1, 12), monkeypatch)
