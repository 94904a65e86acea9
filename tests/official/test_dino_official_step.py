"""Three epochs of DINO training against a float64 reference of the official code's behaviour.

The reference is written from facebookresearch/dino at 7c446df, not from sslib:

- the student and teacher are the backbone in ``utils.MultiCropWrapper`` (consecutive crops of one
  resolution through the backbone together, the head once on all features; utils.py L594-629) with
  ``DINOHead`` (Linear+GELU MLP into a bottleneck, L2-normalised, then a weight-normalised bias-free last
  layer with gains fixed at 1; vision_transformer.py L257-291); the teacher gets the two global crops
  (main_dino.py L318);
- ``DINOLoss`` (main_dino.py L363-416): student log-softmax(s / 0.1), teacher softmax((t - c) / temp)
  with temp = ``teacher_temp_schedule[epoch]``, np.linspace over the warm-up epochs then constant
  (L374-378, L388), the cross-entropy averaged over the (global view iq, crop v != iq) pairs
  (L392-402), then the centre c <- 0.9 c + 0.1 mean of the teacher output (L403, L406-416);
- ``train_one_epoch`` (main_dino.py L301-350): lr and weight decay of iteration ``it`` set on the
  param groups before the step, the decay only on the first group (L309-312); ``loss.backward()``,
  ``utils.clip_gradients`` (each gradient tensor times clip / (norm + 1e-6) when that is < 1, utils.py
  L132-141), then ``utils.cancel_gradients_last_layer`` (the last layer's gradients dropped while
  epoch < freeze_last_layer, utils.py L144-149), AdamW's step; the teacher moved with
  ``momentum_schedule[it]`` after the step (L346-350);
- the schedules of ``utils.cosine_scheduler`` (utils.py L187-198: np.linspace warm-up from 0 with its
  endpoint, then cosine) for the lr (main_dino.py L238-243), the weight decay (L244-248, no warm-up) and
  the teacher momentum (L250-251, to 1); the param groups of ``utils.get_params_groups`` (utils.py
  L632-643: no decay for biases and 1-D parameters).

sslib runs the same steps through Lightning in float64 with ``method=dino optim=adamw`` and a tiny
BatchNorm-free conv backbone, so that grouping crops by resolution cannot matter.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sslib.app.methods.base
from sslib.app import methods
from sslib.app.config import compose
from tests.helpers.official_step import float64_trainer, multicrop_batches

pytestmark = pytest.mark.usefixtures("one_thread")

B, K, FEAT, N_CROPS = 8, 5, 4, 4
EPOCHS, STEPS = 3, 2  # iterations per epoch
TOTAL = EPOCHS * STEPS
LR, FINAL_LR_RATIO, WARMUP_EPOCHS = 0.01, 0.1, 2
WD, WD_END = 0.04, 0.4
TEMP, TEMP_END, TEMP_EPOCHS, STUDENT_TEMP = 0.04, 0.07, 3, 0.1
EMA_BASE, CENTER_MOMENTUM = 0.9, 0.9
FREEZE_EPOCHS = 1
CLIP = 0.05  # below the gradient norms of most tensors (checked in the test)
BETAS, EPS = (0.9, 0.999), 1e-8


def tiny_backbone() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, FEAT, 3, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def batches() -> list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]]:
    """One epoch: 2 global crops 8x8, then 2 local crops 4x4, of B images."""
    return multicrop_batches(STEPS, B)


# --- the reference ------------------------------------------------------------------------------


def official_cosine_scheduler(base, final, epochs, niter, warmup_epochs=0, warmup_start=0.0) -> np.ndarray:
    """utils.cosine_scheduler: np.linspace(start, base, W) for W = warmup_epochs * niter iterations,
    then final + (base - final) (1 + cos(pi i / n)) / 2 over the n remaining ones."""
    warmup = warmup_epochs * niter
    head = np.linspace(warmup_start, base, warmup) if warmup_epochs > 0 else np.array([])
    i = np.arange(epochs * niter - warmup)
    return np.concatenate((head, final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / len(i)))))


def official_teacher_temps() -> np.ndarray:
    """DINOLoss.teacher_temp_schedule, read with the epoch's index."""
    return np.concatenate(
        (np.linspace(TEMP, TEMP_END, TEMP_EPOCHS), np.ones(EPOCHS - TEMP_EPOCHS) * TEMP_END)
    )


def official_momenta() -> np.ndarray:
    return official_cosine_scheduler(EMA_BASE, 1.0, EPOCHS, STEPS)


class Head(nn.Module):
    """DINOHead with norm_last_layer: mlp, L2 normalisation, last layer g v / ||v|| with g = 1."""

    def __init__(self, mlp: nn.Module, direction: torch.Tensor) -> None:
        super().__init__()
        self.mlp = mlp
        self.last_layer_v = nn.Parameter(direction.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return x @ (self.last_layer_v / self.last_layer_v.norm(dim=1, keepdim=True)).T


class MultiCrop(nn.Module):
    """MultiCropWrapper: one backbone pass per run of crops of equal width, the head on all of them."""

    def __init__(self, backbone: nn.Module, head: Head) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        widths = torch.tensor([c.shape[-1] for c in crops])
        ends = torch.cumsum(torch.unique_consecutive(widths, return_counts=True)[1], 0).tolist()
        feats, start = [], 0
        for end in ends:
            feats.append(self.backbone(torch.cat(crops[start:end])))
            start = end
        return self.head(torch.cat(feats))


def official_loss(student_out, teacher_out, center, temp):
    """DINOLoss.forward and update_center: (loss, new centre)."""
    s = (student_out / STUDENT_TEMP).chunk(N_CROPS)
    t = F.softmax((teacher_out - center) / temp, dim=-1).detach().chunk(2)
    total, n = 0.0, 0
    for iq, q in enumerate(t):
        for v in range(len(s)):
            if v != iq:
                total = total + torch.sum(-q * F.log_softmax(s[v], dim=-1), dim=-1).mean()
                n += 1
    batch_center = teacher_out.detach().sum(0, keepdim=True) / len(teacher_out)
    return total / n, center * CENTER_MOMENTUM + batch_center * (1 - CENTER_MOMENTUM)


def reference_run(start: dict, clip: float):
    """TOTAL iterations of train_one_epoch: the student, teacher, centre, losses and momenta used."""
    head = Head(copy.deepcopy(start["projector"]), start["direction"])
    student = MultiCrop(copy.deepcopy(start["backbone"]), head)
    teacher = copy.deepcopy(student)
    teacher.requires_grad_(False)
    regularized, not_regularized = [], []
    for name, p in student.named_parameters():
        (not_regularized if name.endswith(".bias") or p.ndim == 1 else regularized).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": regularized}, {"params": not_regularized, "weight_decay": 0.0}], betas=BETAS, eps=EPS
    )
    lrs = official_cosine_scheduler(LR, LR * FINAL_LR_RATIO, EPOCHS, STEPS, WARMUP_EPOCHS)
    wds = official_cosine_scheduler(WD, WD_END, EPOCHS, STEPS)
    momenta, temps = official_momenta(), official_teacher_temps()
    center = torch.zeros(1, K, dtype=torch.float64)
    losses, clipped = [], 0
    for epoch in range(EPOCHS):
        for i, (crops, _, _) in enumerate(batches()):
            it = STEPS * epoch + i
            for g, group in enumerate(optimizer.param_groups):
                group["lr"] = lrs[it]
                if g == 0:
                    group["weight_decay"] = wds[it]
            teacher_out = teacher(crops[:2])
            loss, center = official_loss(student(crops), teacher_out, center, temps[epoch])
            losses.append(float(loss))
            optimizer.zero_grad()
            loss.backward()
            if clip:
                for p in student.parameters():
                    if p.grad is not None:
                        coef = clip / (p.grad.norm(2) + 1e-6)
                        if coef < 1:
                            p.grad.mul_(coef)
                            clipped += 1
            if epoch < FREEZE_EPOCHS:
                for name, p in student.named_parameters():
                    if "last_layer" in name:
                        p.grad = None
            optimizer.step()
            with torch.no_grad():
                m = momenta[it]
                for ps, pt in zip(student.parameters(), teacher.parameters(), strict=True):
                    pt.mul_(m).add_((1 - m) * ps.detach())
    assert not clip or clipped > TOTAL  # the clipping is active
    return student, teacher, center, losses


# --- sslib --------------------------------------------------------------------------------------


def direction_of(prototypes: nn.Module) -> torch.Tensor:
    return prototypes.layer.parametrizations.weight.original1


def gain_of(prototypes: nn.Module) -> torch.Tensor:
    return prototypes.layer.parametrizations.weight.original0


def sslib_run(run_dir, clip: float) -> dict:
    """Train sslib's DINO for EPOCHS x STEPS iterations; its model, starting state and per-step records:
    the loss, the labeler's temperature, the prototype direction before the step, the EMA momentum."""
    record: dict = {"losses": [], "temperatures": [], "directions": [], "momenta": []}
    with pytest.MonkeyPatch.context() as mp:
        torch.manual_seed(0)
        mp.setattr("sslib.app.methods.base.build_backbone", lambda cfg: (tiny_backbone(), FEAT))
        cfg = compose(
            [
                "method=dino",
                "optim=adamw",
                "recipe=null",
                f"run_dir={run_dir}",
                f"data.batch_size={B}",
                f"method.num_prototypes={K}",
                "method.projector_dims=[6,6,3]",
                f"method.freeze_prototypes_epochs={FREEZE_EPOCHS}",
                f"method.ema.base_momentum={EMA_BASE}",
                "method.ema.momentum_step=current",
                f"labeler.schedule.temperature={{start: {TEMP}, end: {TEMP_END}, kind: linear, "
                f"epochs: {TEMP_EPOCHS}, unit: epoch}}",
                f"labeler.center_momentum={CENTER_MOMENTUM}",
                f"optim.lr={LR}",
                "optim.scale_lr=false",
                f"optim.weight_decay={WD}",
                f"optim.final_weight_decay={WD_END}",
                f"optim.warmup_epochs={WARMUP_EPOCHS}",
                "optim.warmup_start_ratio=0.0",
                "optim.warmup_ends_at_peak=true",
                f"optim.final_lr_ratio={FINAL_LR_RATIO}",
                f"optim.clip_grad={clip}",
            ]
        )
        assert cfg.method.crop_forward == "resolution" and cfg.method.norm_last_layer
        assert not cfg.method.ema.share_prototypes and cfg.method.student_temperature == STUDENT_TEMP
        model = methods.build(cfg, num_classes=3, n_global=2).double()
        start = {
            "backbone": copy.deepcopy(model.backbone),
            "projector": copy.deepcopy(model.projector),
            "direction": direction_of(model.prototypes).detach().clone(),
        }
        step, ema_update = model.ssl_step, sslib.app.methods.base.ema_update

        def recorded_step(*args, **kwargs):
            record["directions"].append(direction_of(model.prototypes).detach().clone())
            out = step(*args, **kwargs)
            record["losses"].append(
                float(out[0].detach())
            )  # the float64 loss (train/loss is logged in float32)
            record["temperatures"].append(model.labeler.temperature)
            return out

        def recorded_ema(teacher, student, momentum):
            record["momenta"].append(momentum)
            return ema_update(teacher, student, momentum)

        model.ssl_step = recorded_step
        mp.setattr("sslib.app.methods.base.ema_update", recorded_ema)
        trainer = float64_trainer(max_epochs=EPOCHS)
        trainer.fit(model, train_dataloaders=torch.utils.data.DataLoader(batches(), batch_size=None))
    assert trainer.global_step == TOTAL and len(record["losses"]) == TOTAL
    return {"model": model, "start": start, **record}


@pytest.fixture(scope="module")
def runs(one_thread, tmp_path_factory):
    """sslib's run for a clip_grad, trained once per module."""
    cache: dict[float, dict] = {}

    def get(clip: float) -> dict:
        if clip not in cache:
            cache[clip] = sslib_run(tmp_path_factory.mktemp("dino"), clip)
        return cache[clip]

    return get


def close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("clip", [0.0, CLIP])
def test_three_dino_epochs_equal_the_official_behaviour(runs, clip):
    run = runs(clip)
    model = run["model"]
    student, teacher, center, losses = reference_run(run["start"], clip)
    assert run["losses"] == pytest.approx(losses, rel=1e-9, abs=1e-12)
    close(model.labeler.center, center, "centre")
    parts = {"backbone": student.backbone, "projector": student.head.mlp}
    for part, ref in parts.items():
        for name, p in getattr(model, part).state_dict().items():
            close(p, ref.state_dict()[name], f"student {part}.{name}")
    close(direction_of(model.prototypes), student.head.last_layer_v, "student last layer")
    t_parts = {"backbone": teacher.backbone, "projector": teacher.head.mlp}
    for part, ref in t_parts.items():
        for name, p in model.teacher[part].state_dict().items():
            close(p, ref.state_dict()[name], f"teacher {part}.{name}")
    close(direction_of(model.teacher["prototypes"]), teacher.head.last_layer_v, "teacher last layer")
    for prototypes in (model.prototypes, model.teacher["prototypes"]):  # norm_last_layer: gains stay 1
        assert torch.equal(gain_of(prototypes), torch.ones_like(gain_of(prototypes)))
    # the run moved everything it compares: student, teacher (apart from the student) and centre
    start = run["start"]
    for got, first in [
        (model.backbone[0].weight, start["backbone"][0].weight),
        (model.projector[0].bias, start["projector"][0].bias),
        (direction_of(model.prototypes), start["direction"]),
        (model.teacher["backbone"][0].weight, model.backbone[0].weight),
    ]:
        assert (got - first).abs().max() > 1e-4
    assert center.abs().min() > 0


def test_the_clipping_is_active_in_the_reference(runs):
    """CLIP caps some gradient tensors of the first unfrozen step, so the clipped run tests something:
    the reference with the clip differs from the reference without."""
    start = runs(0.0)["start"]
    _, _, _, plain = reference_run(start, 0.0)
    _, _, _, clipped = reference_run(start, CLIP)
    assert plain[0] == clipped[0] and abs(plain[-1] - clipped[-1]) > 1e-6 * abs(plain[-1])


def test_teacher_temperature_is_held_for_each_epoch_as_np_linspace(runs):
    temps = runs(0.0)["temperatures"]
    per_epoch = official_teacher_temps()
    assert temps == pytest.approx([per_epoch[it // STEPS] for it in range(TOTAL)], rel=1e-12, abs=0)
    assert temps[0] == temps[1] == TEMP and temps[-1] == pytest.approx(TEMP_END, rel=1e-12)
    assert temps[2] == temps[3] != temps[1]  # one value per epoch, not moved every step


def test_last_layer_is_frozen_in_the_first_epoch_only(runs):
    run = runs(0.0)
    directions = [*run["directions"], direction_of(run["model"].prototypes).detach()]  # before each step, end
    first = run["start"]["direction"]
    unfrozen = FREEZE_EPOCHS * STEPS  # the first iteration that updates the last layer
    for it in range(unfrozen + 1):
        assert torch.equal(directions[it], first), f"last layer moved by iteration {it - 1}"
    for it in range(unfrozen, TOTAL):
        assert (directions[it + 1] - directions[it]).abs().max() > 1e-6, f"iteration {it} left it unchanged"


def test_ema_momentum_after_step_it_is_momentum_schedule_it(runs):
    momenta = runs(0.0)["momenta"]
    official = official_momenta()
    assert momenta == pytest.approx(official.tolist(), rel=1e-12, abs=0)
    assert momenta[0] == EMA_BASE and math.isclose(momenta[-1], official[TOTAL - 1])  # not [it + 1]
