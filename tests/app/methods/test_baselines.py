"""The non-clustering baselines (BYOL, Barlow Twins, SimCLR): training, losses against float64 references
written from the papers' formulas, the EMA target, equivalence under 2-process gloo DDP, and the config."""

from __future__ import annotations

import itertools
import math

import lightning as L
import pytest
import torch

from sslib.app import methods
from sslib.app.cli import pretrain_main
from sslib.app.config import ConfigError, compose
from sslib.losses import barlow_twins_loss, byol_loss, nt_xent_loss, standardize
from tests.helpers.ddp import run_on_ranks
from tests.helpers.probes import EMAProbe, LossSpy, assert_updates_follow_the_ramp

BASELINES = ("byol", "barlow", "simclr")
TINY = [
    "data.batch_size=8",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.global_crops.size=16",  # resnet18 with the CIFAR stem (backbone.cifar=auto)
    "method.projector_dims=[32,16]",
    "optim.warmup_epochs=0",
    "baseline_eval=false",
]
HEADS = {"byol": ["method.predictor_dims=[32,16]"]}
LAMBD, SCALE, TEMPERATURE = 0.0051, 0.1, 0.2


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cfg(method: str, *overrides: str):
    return compose([f"method={method}", *TINY, *HEADS.get(method, []), *overrides])


def random_views(n: int, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z1 + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)  # correlated views


# --- float64 references from the papers' formulas ------------------------------------------------


def byol_reference(predictions, targets) -> float:
    """BYOL Eq. 2 summed over (target view v, other crop c): mean_i ||q/|q| - z/|z| ||^2."""
    total = 0.0
    for v, c in itertools.product(range(len(targets)), range(len(predictions))):
        if c != v:
            q = predictions[c] / predictions[c].norm(dim=1, keepdim=True)
            z = targets[v] / targets[v].norm(dim=1, keepdim=True)
            total += float(((q - z) ** 2).sum(dim=1).mean())
    return total


def barlow_reference(z1, z2, lambd: float, scale: float, eps: float = 1e-5) -> float:
    """Barlow Twins Eq. 1: sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2, C from batch-normalised views."""
    n, d = z1.shape
    a = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + eps)
    b = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + eps)
    c = [[sum(float(a[k, i] * b[k, j]) for k in range(n)) / n for j in range(d)] for i in range(d)]
    on = sum((1 - c[i][i]) ** 2 for i in range(d))
    off = sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)
    return scale * (on + lambd * off)


def nt_xent_reference(z1, z2, temperature: float) -> float:
    """SimCLR Eq. 1, mean over the 2N anchors: -log exp(s_i,p(i) / T) / sum_{k != i} exp(s_ik / T)."""
    u = torch.cat([z1, z2])
    u = u / u.norm(dim=1, keepdim=True)
    n2 = len(u)
    total = 0.0
    for i in range(n2):
        positive = (i + n2 // 2) % n2
        sims = [float(u[i] @ u[k]) / temperature for k in range(n2)]
        denominator = sum(math.exp(s) for k, s in enumerate(sims) if k != i)
        total += -(sims[positive] - math.log(denominator))
    return total / n2


def test_byol_loss_matches_reference_with_and_without_local_crops():
    z = random_views(6) + random_views(6, seed=1)  # 4 crops: 2 global, 2 local
    targets = [t.flip(1) for t in z[:2]]
    for n_crops in (2, 4):
        loss = byol_loss(list(z[:n_crops]), targets)
        assert loss.dtype == torch.float64
        assert loss.item() == pytest.approx(byol_reference(z[:n_crops], targets), rel=1e-12)
    assert byol_loss([targets[1], targets[0]], targets).item() == pytest.approx(0.0, abs=1e-12)


def test_barlow_loss_matches_reference_and_standardize_is_batchnorm():
    z1, z2 = random_views(10, d=6)
    assert barlow_twins_loss(z1, z2, LAMBD, SCALE).item() == pytest.approx(
        barlow_reference(z1, z2, LAMBD, SCALE), rel=1e-10
    )
    bn = torch.nn.BatchNorm1d(6, affine=False).double().train()
    torch.testing.assert_close(standardize(z1, len(z1)), bn(z1))


def test_nt_xent_matches_reference():
    z1, z2 = random_views(7)
    for temperature in (0.1, 0.5):
        loss = nt_xent_loss(z1, z2, temperature)
        assert loss.item() == pytest.approx(nt_xent_reference(z1, z2, temperature), rel=1e-10)


# --- training ------------------------------------------------------------------------------------


class RandomCrops(torch.utils.data.Dataset):
    """``([crop 1, crop 2], label, index)`` of random 16 px images, the batch format of sslib's data module."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        return [torch.randn(3, 16, 16, generator=g) for _ in range(2)], i % 10, i


LOSS_FUNCTIONS = {
    "byol": ("sslib.app.methods.byol.byol_loss", byol_reference),
    "barlow": ("sslib.app.methods.barlow.barlow_twins_loss", barlow_reference),
    "simclr": ("sslib.app.methods.simclr.nt_xent_loss", nt_xent_reference),
}
EMA_RAMP = ["method.ema.base_momentum=0.9", "method.ema.final_momentum=0.5"]  # BYOL: each step moves


def in_float64(arg):
    """A recorded loss argument for the references: tensors (or lists of them) in float64."""
    if isinstance(arg, list):
        return [a.double() for a in arg]
    return arg.double() if torch.is_tensor(arg) else arg


@pytest.mark.parametrize("method", BASELINES)
def test_baseline_trains_a_few_cpu_steps(method, monkeypatch):
    """Each step's loss is the reference loss of the embeddings the step fed it and the last one is logged;
    the backbone changed; BYOL's target follows the EMA formula with the ramped momentum."""
    target, reference = LOSS_FUNCTIONS[method]
    spy = LossSpy.install(monkeypatch, target)
    torch.manual_seed(0)
    model = methods.build(
        tiny_cfg(method, *(EMA_RAMP if method == "byol" else [])), num_classes=10, n_global=2
    )
    conv = model.backbone.conv1.weight.detach().clone()
    probe = EMAProbe()
    trainer = L.Trainer(
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[probe] if method == "byol" else [],
    )
    trainer.fit(model, torch.utils.data.DataLoader(RandomCrops(), batch_size=8, drop_last=True))
    assert len(spy.calls) == 2
    for args, value in spy.calls:
        expected = reference(*[in_float64(x) for x in args])
        assert value.item() == pytest.approx(expected, rel=1e-5)
    assert trainer.callback_metrics["train/loss"].item() == pytest.approx(value.item(), rel=1e-6)
    assert 0 < trainer.callback_metrics["embedding/std"] < 1
    assert not torch.equal(conv, model.backbone.conv1.weight)
    if method == "byol":
        assert list(model.teacher) == ["backbone", "projector"] and "predictor" in model.ssl_modules()
        assert_updates_follow_the_ramp(probe, 2, 0.9, 0.5)
        assert all(not p.requires_grad for p in model.teacher.parameters())


def test_byol_takes_local_crops_and_the_others_refuse_them():
    cfg = tiny_cfg("byol", "data.local_crops={n: 2, size: 8, scale: [0.05, 0.3]}")
    model = methods.build(cfg, num_classes=10, n_global=2)
    crops = [torch.randn(2, 3, 16, 16) for _ in range(2)] + [torch.randn(2, 3, 8, 8) for _ in range(2)]
    loss, feats, _ = model.ssl_step(crops)  # 2 targets x 3 other crops
    assert torch.isfinite(loss) and feats.shape == (2, 512)
    with pytest.raises(ValueError, match="byol needs data.global_crops.n=2"):
        methods.build(cfg, num_classes=10, n_global=3)
    for method in ("barlow", "simclr"):
        with pytest.raises(ValueError, match=f"^{method} compares exactly 2 views"):
            methods.build(tiny_cfg(method, "data.local_crops={n: 2, size: 8}"), num_classes=10, n_global=2)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["method=simclr", "method.temperature=0"], "method.temperature must be a finite number > 0"),
        (["method=barlow", "method.lambd=-1"], "method.lambd must be a finite number > 0"),
        (["method=byol", "method.ema.base_momentum=1.5"], r"method.ema.base_momentum must be in \[0, 1\]"),
        (["method=byol", "method.predictor_dims=[8,4]"], "predictor_dims must end with the projector's"),
    ],
)
def test_bad_values_are_one_line_errors(overrides, match):
    with pytest.raises(ValueError, match=match) as err:
        methods.build(compose(overrides), num_classes=10, n_global=2)
    assert "\n" not in str(err.value)


# --- config --------------------------------------------------------------------------------------


def test_baselines_compose_without_a_labeler_and_pick_their_recipes():
    for method in BASELINES:
        cfg = compose([f"method={method}"])
        assert cfg.method.name == method and cfg.labeler is None
        assert cfg.name == f"{method}-resnet18-digits" and cfg.data.batch_size == 128  # digits recipe
    assert compose(["method=byol", "labeler=null"]).labeler is None
    byol = compose(["method=byol", "data=cifar100"])
    assert (byol.optim.lr, byol.optim.weight_decay, byol.method.ema.base_momentum) == (1.0, 1.0e-5, 0.99)
    barlow = compose(["method=barlow", "data=cifar10"])
    assert (barlow.method.lambd, barlow.method.scale_loss, barlow.optim.lr) == (0.0051, 0.1, 0.3)
    simclr = compose(["method=simclr", "data=cifar10"])
    assert (simclr.method.temperature, simclr.optim.lr, list(simclr.data.augment.solarize_p)) == (
        0.2,
        0.4,
        [0.0],
    )
    assert compose(["method=mira"]).name == "mira-mira-resnet18-digits"  # clustering names keep the labeler


def test_a_labeler_for_a_baseline_is_a_one_line_error(capsys):
    message = "method byol has no pseudo-labeler; labeler= applies to deepclusterv2, dino, mira, swav"
    for extra in ("labeler=sinkhorn", "labeler.beta=0.5"):
        with pytest.raises(ConfigError, match=f"^{message}$"):
            compose(["method=byol", extra])
    assert pretrain_main(["method=byol", "labeler=sinkhorn"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {message}"


# --- torch.distributed: 2 gloo processes give the loss of one process on the whole batch ----------

LOSSES = {
    "barlow": lambda a, b: barlow_twins_loss(a, b, LAMBD, SCALE),
    "simclr": lambda a, b: nt_xent_loss(a, b, TEMPERATURE),
}
SPLITS = {"barlow": (5, 7), "simclr": (6, 6)}  # all_gather needs equal shards; Barlow's sums do not


def loss_and_grad(name: str, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss ``name`` of rows ``z1``, ``z2`` (B, d) and its gradient (B, 2d) with respect to them."""
    a, b = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = LOSSES[name](a, b)
    loss.backward()
    return loss.detach(), torch.cat([a.grad, b.grad], dim=1)


def shard_losses(r: int) -> dict[str, torch.Tensor]:
    """Rank r's loss and gradients on its shard of each split's views (run under 2-process gloo)."""
    out = {}
    for name, split in SPLITS.items():
        start = sum(split[:r])
        z1, z2 = (z[start : start + split[r]] for z in random_views(sum(split)))
        out[name], out[f"{name}_grad"] = loss_and_grad(name, z1, z2)
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict[str, torch.Tensor]]:
    return run_on_ranks(shard_losses, tmp_path_factory.mktemp("ddp"))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_ddp_loss_and_gradients_equal_one_process_on_the_whole_batch(ranks, name):
    loss, grad = loss_and_grad(name, *random_views(sum(SPLITS[name])))
    if name == "barlow":  # every rank computes the global loss
        for r in ranks:
            assert r[name].item() == pytest.approx(loss.item(), rel=1e-10)
    else:  # each rank its anchors' mean; the mean over ranks (what Lightning logs) is the global loss
        assert torch.stack([r[name] for r in ranks]).mean().item() == pytest.approx(loss.item(), rel=1e-10)
    # each rank's gradient is world_size x that of the global loss; DDP's averaging makes it exact
    grads = torch.cat([r[f"{name}_grad"] for r in ranks]) / 2
    torch.testing.assert_close(grads, grad, rtol=1e-9, atol=1e-12)


def test_ddp_control_one_shard_alone_gives_another_loss():
    z1, z2 = random_views(sum(SPLITS["barlow"]))
    alone = barlow_twins_loss(z1[:5], z2[:5], LAMBD, SCALE)
    assert abs(alone.item() - barlow_twins_loss(z1, z2, LAMBD, SCALE).item()) > 1e-3
