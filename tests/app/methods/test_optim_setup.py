"""``sslib.app.optimizer.configure``: lr scaling, parameter groups, the probe group and the warm-up schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

import sslib
from sslib.app.optimizer import configure
from sslib.optim import LARS

OPTIM_CONF = Path(sslib.__file__).parent / "app" / "conf" / "optim"
BATCH = 128  # per device


def _cfg(optim: str = "lars", **overrides) -> DictConfig:
    """A run config with the shipped ``conf/optim/<optim>.yaml``, ``optim.<key>`` set from ``overrides``."""
    cfg = OmegaConf.create(
        {
            "optim": OmegaConf.load(OPTIM_CONF / f"{optim}.yaml"),
            "data": {"batch_size": BATCH},
            "online_eval": {"probe_lr": 0.1},
        }
    )
    return OmegaConf.merge(cfg, {"optim": overrides})


def _modules() -> tuple[nn.ModuleDict, nn.Linear]:
    torch.manual_seed(0)
    modules = nn.ModuleDict(
        {"backbone": nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), "head": nn.Linear(4, 2)}
    )
    return modules, nn.Linear(4, 3)


def _lrs(cfg: DictConfig, world_size: int, total_steps: int, steps_per_epoch: float, at: list[int]):
    """Each group's lr at the iterations ``at`` (the scheduler stepped once per iteration)."""
    optimizer, scheduler = configure(cfg, *_modules(), world_size, total_steps, steps_per_epoch)
    lrs = {}
    for step in range(max(at) + 1):
        if step in at:
            lrs[step] = [group["lr"] for group in optimizer.param_groups]
        optimizer.step()  # no gradients: nothing moves
        scheduler.step()
    return lrs


def _ids(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


@pytest.mark.parametrize(("world_size", "lr", "probe_lr"), [(1, 0.15, 0.05), (2, 0.3, 0.1)])
def test_peak_lr_is_base_lr_times_global_batch_over_256(world_size, lr, probe_lr):
    optimizer, _ = configure(_cfg(), *_modules(), world_size, total_steps=10, steps_per_epoch=1)
    peaks = [group["initial_lr"] for group in optimizer.param_groups]
    assert peaks == pytest.approx([lr, lr, probe_lr])  # 0.3 and 0.1 x (128 x world) / 256
    unscaled, _ = configure(_cfg(scale_lr=False), *_modules(), world_size, total_steps=10, steps_per_epoch=1)
    # The probe's lr is scaled whatever optim.scale_lr says.
    assert [group["initial_lr"] for group in unscaled.param_groups] == pytest.approx([0.3, 0.3, probe_lr])


def test_groups_decay_and_lars_exclusion():
    modules, probe = _modules()
    optimizer, _ = configure(_cfg(), modules, probe, world_size=1, total_steps=10, steps_per_epoch=1)
    assert isinstance(optimizer, LARS)
    adapted, excluded, probe_group = optimizer.param_groups
    conv, bn, head = modules["backbone"][0], modules["backbone"][1], modules["head"]
    assert _ids(adapted) == {id(conv.weight), id(head.weight)}
    assert _ids(excluded) == {id(conv.bias), id(bn.weight), id(bn.bias), id(head.bias)}
    assert _ids(probe_group) == {id(probe.weight), id(probe.bias)}
    assert [(g["weight_decay"], g["lars_exclude"]) for g in optimizer.param_groups] == [
        (1.0e-6, False),
        (0.0, True),
        (0.0, True),
    ]
    # optim.kwargs reach the optimiser: the shipped LARS settings, then an override.
    assert (adapted["eta"], adapted["clip_lr"], adapted["trust_ratio"]) == (0.02, True, "paper")
    moco, _ = configure(
        _cfg(kwargs={"eta": 0.001, "clip_lr": False, "trust_ratio": "moco"}), *_modules(), 1, 10, 1
    )
    assert [(g["eta"], g["clip_lr"], g["trust_ratio"]) for g in moco.param_groups] == [
        (0.001, False, "moco")
    ] * 3
    unsplit, _ = configure(_cfg(exclude_bias_norm=False), modules, probe, 1, 10, 1)
    everything, probe_only = unsplit.param_groups
    assert _ids(everything) == {id(p) for p in modules.parameters()} and not everything["lars_exclude"]
    assert _ids(probe_only) == _ids(probe_group)


def test_probe_takes_plain_sgd_steps_without_decay():
    modules, probe = _modules()
    cfg = _cfg(warmup_epochs=0, weight_decay=0.5)
    optimizer, _ = configure(cfg, modules, probe, world_size=1, total_steps=10, steps_per_epoch=1)
    before = [p.detach().clone() for p in probe.parameters()]
    for p in [*modules.parameters(), *probe.parameters()]:
        p.grad = torch.ones_like(p)
    optimizer.step()
    for p, p0 in zip(probe.parameters(), before, strict=True):  # lr 0.05 x g, no trust ratio, no decay
        torch.testing.assert_close(p.detach(), p0 - 0.05, rtol=0, atol=1e-7)


def test_warmup_epochs_become_steps():
    # 10 epochs of 10 steps, 2 warm-up epochs = 20 steps from 0 to the peak, then cosine to 0.1 x peak.
    cfg = _cfg(warmup_epochs=2, final_lr_ratio=0.1)
    lrs = _lrs(cfg, world_size=2, total_steps=100, steps_per_epoch=10, at=[0, 10, 19, 20, 60, 100])
    peak = 0.3  # 0.3 x 256 / 256
    want = {0: 0.0, 10: peak / 2, 19: peak * 19 / 20, 20: peak, 60: 0.55 * peak, 100: 0.1 * peak}
    for step, value in want.items():
        assert lrs[step][0] == pytest.approx(value), step
        assert lrs[step][2] == pytest.approx(value / 3), step  # the probe (peak 0.1) follows the same curve
    # More warm-up epochs than training: the whole run warms up.
    longer = _lrs(_cfg(warmup_epochs=20), world_size=2, total_steps=100, steps_per_epoch=10, at=[50, 99])
    assert [longer[50][0], longer[99][0]] == pytest.approx([peak / 2, peak * 99 / 100])


@pytest.mark.parametrize(
    ("world_size", "peak"),
    [(32, 4.8), (8, 1.2), (2, 0.3)],  # global batch 4096 (the official MIRA run), 1024, 256
)
def test_warmup_from_the_unscaled_base_lr(world_size, peak):
    # 40 epochs of 10 steps, 10 warm-up epochs: from optim.lr = 0.3 (not scaled) to the peak, cosine to 0.
    cfg = _cfg(warmup_start_ratio="base", warmup_epochs=10)
    lrs = _lrs(cfg, world_size, total_steps=400, steps_per_epoch=10, at=[0, 50, 100, 250, 400])
    want = {0: 0.3, 50: (0.3 + peak) / 2, 100: peak, 250: peak / 2, 400: 0.0}
    for step, value in want.items():
        assert lrs[step][0] == pytest.approx(value), step
    assert lrs[0][2] == pytest.approx(0.1)  # the probe too starts at its unscaled lr


def test_warmup_from_base_without_lr_scaling_is_flat():
    lrs = _lrs(_cfg("sgd", warmup_start_ratio="base", scale_lr=False), 4, 100, 10, at=[0, 5, 10])
    assert [lrs[s][0] for s in (0, 5, 10)] == pytest.approx([0.05] * 3)


@pytest.mark.parametrize("value", ["bse", -0.5, True, float("nan"), float("inf"), [0.1]])
def test_bad_warmup_start_ratio_is_one_line(value):
    with pytest.raises(ValueError, match=r"warmup_start_ratio must be a number >= 0 or 'base', got") as err:
        configure(_cfg(warmup_start_ratio=value), *_modules(), 1, 10, 1)
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_bad_warmup_epochs_is_one_line():
    with pytest.raises(ValueError, match=r"warmup_epochs must be a number >= 0, got -1$"):
        configure(_cfg(warmup_epochs=-1), *_modules(), 1, 10, 1)
