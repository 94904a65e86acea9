"""Two real training steps of MIRA against a float64 reference of the official code's behaviour.

The reference is written from the paper and movinghoon/MIRA's ``train.py`` / ``src/optimizer.py``, not
from sslib: each crop alone through encoder and projector (student and EMA teacher), the fixed point of
``mira()`` on each global view of the teacher's logits, the loss averaged over (view, other crop) pairs,
the head's gradient dropped during the first epoch, MoCo v3's LARS step with the warm-up starting at the
unscaled base lr, and the EMA update of everything but the shared head. sslib runs the same two steps
through Lightning in float64 with the MIRA ImageNet recipe's optimiser settings.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslib.app import methods
from sslib.app.config import compose
from tests.helpers.official_step import float64_trainer, multicrop_batches, record_losses

pytestmark = pytest.mark.usefixtures("one_thread")

B, K, FEAT, TAU_S, TAU_T, ITERS = 8, 5, 4, 0.1, 0.225, 30
LR, WD, ETA, MOMENTUM = 0.3, 0.05, 0.001, 0.9
BETA = (0.75, 2 / 3)
EMA = (0.99, 1.0)
STEPS = 2


def tiny_backbone() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, FEAT, 3, padding=1, bias=False),
        nn.BatchNorm2d(FEAT),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def batches() -> list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
    return multicrop_batches(STEPS, B)


def official_targets(logits: torch.Tensor, beta: float) -> torch.Tensor:
    """``mira()`` of the official train.py in one process: (B, K) teacher logits -> (B, K) targets."""
    p = torch.softmax(logits / TAU_T / (1 - beta), dim=1)
    v = p.mean(0).pow(1 - beta)
    for _ in range(ITERS):
        w = p / (v.pow(-beta / (1 - beta)) * p).sum(1, keepdim=True)
        v = w.mean(0).pow(1 - beta)
    t = v.pow(-beta / (1 - beta)) * p
    return t / t.sum(1, keepdim=True)


def head(z: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """The weight-normalised, gain-1, bias-free head on L2-normalised embeddings: cosine logits."""
    return F.normalize(z, dim=1) @ F.normalize(direction, dim=1).T


def cosine(step: int, total: int, start: float, end: float) -> float:
    return end - (end - start) * (1 + math.cos(math.pi * step / total)) / 2


def official_lars_step(params, grads, buffers, lr: float) -> None:
    """MoCo v3's LARS as the official code runs it: decay and trust ratio ||w|| / ||g + wd w|| for ndim > 1."""
    for p, g, mu in zip(params, grads, buffers, strict=True):
        if g is None:
            continue
        dp = g
        if p.ndim > 1:
            dp = dp + WD * p
            pn, un = p.norm(), dp.norm()
            dp = dp * (ETA * pn / un if pn > 0 and un > 0 else 1.0)
        mu.mul_(MOMENTUM).add_(dp)
        p.data.add_(mu, alpha=-lr)


def reference_run(student: dict[str, nn.Module], direction: torch.Tensor, freeze_epochs: int):
    """The official behaviour for STEPS steps of one epoch: final student, teacher and head, and the losses."""
    student = copy.deepcopy(student)
    direction = direction.detach().clone().requires_grad_(True)
    teacher = copy.deepcopy(student)
    params = [*student["backbone"].parameters(), *student["projector"].parameters(), direction]
    buffers = [torch.zeros_like(p) for p in params]
    peak = LR * B / 256
    start = LR  # --warm-up-start-lr: the unscaled base lr
    losses = []
    for step, (crops, _, _) in enumerate(batches()):
        beta = cosine(step, STEPS, *BETA)
        q = [head(student["projector"](student["backbone"](x)), direction) for x in crops]
        with torch.no_grad():
            k = [head(teacher["projector"](teacher["backbone"](x)), direction) for x in crops[:2]]
            targets = [official_targets(lg, beta) for lg in k]
        per_view = []
        for v in range(2):
            others = torch.cat([q[c] for c in range(len(crops)) if c != v])
            per_view.append(
                -(targets[v].repeat(len(crops) - 1, 1) * F.log_softmax(others / TAU_S, dim=1)).sum(1).mean()
            )
        loss = (per_view[0] + per_view[1]) / 2
        losses.append(float(loss))
        grads = torch.autograd.grad(loss, params)
        if freeze_epochs > 0:  # every step here is in epoch 0
            grads = (*grads[:-1], None)
        lr = start + (peak - start) * step / STEPS  # warm-up capped at the run's length
        with torch.no_grad():
            official_lars_step(params, grads, buffers, lr)
            m = cosine(step + 1, STEPS, *EMA)
            for part in ("backbone", "projector"):
                for tp, sp in zip(teacher[part].parameters(), student[part].parameters(), strict=True):
                    tp.mul_(m).add_(sp, alpha=1 - m)
    return student, teacher, direction.detach(), losses


@pytest.mark.parametrize("freeze_epochs", [1, 0])
def test_two_mira_steps_equal_the_official_behaviour(tmp_path, monkeypatch, freeze_epochs):
    torch.manual_seed(0)
    monkeypatch.setattr("sslib.app.methods.base.build_backbone", lambda cfg: (tiny_backbone(), FEAT))
    cfg = compose(
        [
            "method=mira",
            "recipe=null",
            f"run_dir={tmp_path}",
            "data.batch_size=8",
            f"method.num_prototypes={K}",
            "method.projector_dims=[6,6,3]",
            f"method.freeze_prototypes_epochs={freeze_epochs}",
            f"optim.lr={LR}",
            f"optim.weight_decay={WD}",
            "optim.warmup_epochs=10",
            "optim.warmup_start_ratio=base",
            f"optim.kwargs.eta={ETA}",
            "optim.kwargs.clip_lr=false",
            "optim.kwargs.trust_ratio=moco",
            "labeler.backend=torch",
        ]
    )
    assert cfg.method.crop_forward == "per_crop" and cfg.method.ema.share_prototypes
    model = methods.build(cfg, num_classes=3, n_global=2).double()
    start = {"backbone": copy.deepcopy(model.backbone), "projector": copy.deepcopy(model.projector)}
    direction = model.prototypes.layer.parametrizations.weight.original1.detach().clone()

    losses = record_losses(model)
    trainer = float64_trainer(max_steps=STEPS, max_epochs=1)
    trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches(), batch_size=None))

    student, teacher, ref_direction, ref_losses = reference_run(start, direction, freeze_epochs)
    assert losses == pytest.approx(ref_losses, rel=1e-10, abs=1e-12)
    got = model.prototypes.layer.parametrizations.weight.original1.detach()
    torch.testing.assert_close(got, ref_direction, rtol=1e-9, atol=1e-12)
    assert torch.equal(got, direction) == bool(freeze_epochs)  # frozen head: unchanged
    for part in ("backbone", "projector"):
        for name, p in getattr(model, part).state_dict().items():
            torch.testing.assert_close(
                p, student[part].state_dict()[name], rtol=1e-9, atol=1e-12, msg=f"student {part}.{name}"
            )
        for name, p in model.teacher[part].state_dict().items():
            torch.testing.assert_close(
                p, teacher[part].state_dict()[name], rtol=1e-9, atol=1e-12, msg=f"teacher {part}.{name}"
            )
