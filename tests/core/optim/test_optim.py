"""LARS against float64 hand computations, parameter grouping, schedules and optimiser factory."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from sslib.optim import (
    LARS,
    build_optimizer,
    build_scheduler,
    cosine_ramp,
    param_groups,
    scaled_lr,
    warmup_cosine,
)

A = torch.tensor([0.5, 1.0, -2.0, 0.3, 1.5], dtype=torch.float64)
B = torch.tensor([0.1, -0.4, 0.2, 0.0, 1.0], dtype=torch.float64)
W0 = torch.tensor([1.0, -2.0, 0.5, 3.0, -0.7], dtype=torch.float64)


def _grad(w: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum(A * w**2 + B * w)``."""
    return 2 * A * w + B


def _train(
    opt_factory,
    groups_kwargs: dict | None = None,
    steps: int = 2,
    w0: torch.Tensor = W0,
    lrs: list[float] | None = None,
) -> torch.Tensor:
    """Weights after ``steps`` optimiser steps on ``sum(A * w**2 + B * w)``, step ``t`` at ``lrs[t]`` if given."""
    p = nn.Parameter(w0.clone())
    opt = opt_factory([{"params": [p], **(groups_kwargs or {})}])
    for t in range(steps):
        if lrs is not None:
            opt.param_groups[0]["lr"] = lrs[t]
        opt.zero_grad()
        (A * p**2 + B * p).sum().backward()
        opt.step()
    return p.detach()


def _hand_lars(lr, momentum, wd, eta, steps, clip=False, lr_inside=False):
    """Float64 LARS with the trust ratio of the LARS paper's Eq. 6, written independently of the optimiser.

    ``lr`` is a number or one value per step. By default ``lr`` multiplies the momentum buffer at the
    update (``v = m v + d``, ``w -= lr v``), as sslib, solo-learn (``solo/utils/lars.py`` L152-165) and
    the official MIRA / MoCo v3 code (``src/optimizer.py`` L141-146) do, so that under warm-up and cosine
    sslib takes the steps of the code its recipes follow. ``lr_inside`` is the paper's Algorithm 1
    (``v = m v + lr d``, ``w -= v``). The two agree while ``lr`` is constant.
    """
    lrs = [lr] * steps if isinstance(lr, (int, float)) else lr
    w, v = W0.clone(), torch.zeros_like(W0)
    for step_lr in lrs:
        g = _grad(w)
        w_norm, g_norm = math.sqrt(float((w * w).sum())), math.sqrt(float((g * g).sum()))
        trust = eta * w_norm / (g_norm + wd * w_norm)
        if clip:
            trust = min(trust / step_lr, 1.0)
        d = trust * (g + wd * w)
        if lr_inside:
            v = momentum * v + step_lr * d
            w = w - v
        else:
            v = momentum * v + d
            w = w - step_lr * v
    return w


@pytest.mark.parametrize("steps", [1, 2])
def test_lars_matches_hand_computation(steps):
    lr, momentum, wd, eta = 0.5, 0.9, 0.01, 0.02
    got = _train(lambda g: LARS(g, lr=lr, momentum=momentum, weight_decay=wd, eta=eta), steps=steps)
    torch.testing.assert_close(got, _hand_lars(lr, momentum, wd, eta, steps), rtol=0, atol=1e-12)
    assert not torch.allclose(got, W0)


def test_lars_clip_lr():
    # Small eta: trust / lr < 1, so the clipped step is lr * trust / lr = trust.
    got = _train(lambda g: LARS(g, lr=0.5, momentum=0.9, weight_decay=0.01, eta=0.02, clip_lr=True))
    torch.testing.assert_close(got, _hand_lars(0.5, 0.9, 0.01, 0.02, 2, clip=True), rtol=0, atol=1e-12)
    # Huge eta: clipped to 1, i.e. plain SGD with momentum and (coupled) weight decay.
    got = _train(lambda g: LARS(g, lr=0.1, momentum=0.9, weight_decay=0.01, eta=1e3, clip_lr=True), steps=3)
    want = _train(lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, weight_decay=0.01), steps=3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_lr_multiplies_the_momentum_buffer_at_the_update():
    # A schedule changes lr between steps: lr outside the buffer and the paper's lr inside it then differ.
    lrs, momentum, wd, eta = [0.5, 0.1, 0.3], 0.9, 0.01, 0.02
    got = _train(lambda g: LARS(g, lr=lrs[0], momentum=momentum, weight_decay=wd, eta=eta), steps=3, lrs=lrs)
    torch.testing.assert_close(got, _hand_lars(lrs, momentum, wd, eta, 3), rtol=0, atol=1e-12)
    inside = _hand_lars(lrs, momentum, wd, eta, 3, lr_inside=True)
    assert (got - inside).abs().max() > 1e-3
    # With a constant lr the two forms are the same update.
    torch.testing.assert_close(
        _hand_lars(0.5, momentum, wd, eta, 3), _hand_lars(0.5, momentum, wd, eta, 3, lr_inside=True)
    )


def _tiny_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


X = torch.randn(8, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _backward(net: nn.Module) -> None:
    """Gradients of ``mean(net(X) ** 2)``."""
    net.zero_grad()
    (net(X) ** 2).mean().backward()


def _source_lars(net, steps, lr, momentum, wd, eta, trust_ratio):
    """Float64 LARS steps as the sources write them; returns ``{name: (weight, momentum buffer)}``.

    Weights (``ndim > 1``): ``d = g + wd w`` scaled by ``eta ||w|| / (||g|| + wd ||w||)`` (solo-learn,
    ``solo/utils/lars.py`` L140-150, its 1e-8 epsilon left out) or ``eta ||w|| / ||d||`` (official MIRA,
    ``src/optimizer.py`` L128-139); biases and norms: ``d = g``. Then ``mu = m mu + d``, ``w -= lr mu``.
    """
    mus = {name: torch.zeros_like(p) for name, p in net.named_parameters()}
    for _ in range(steps):
        _backward(net)
        with torch.no_grad():
            for name, p in net.named_parameters():
                d = p.grad.clone()
                if p.ndim > 1:
                    d = d + wd * p
                    w_norm = torch.linalg.vector_norm(p)
                    denominator = (
                        torch.linalg.vector_norm(d)
                        if trust_ratio == "moco"
                        else torch.linalg.vector_norm(p.grad) + wd * w_norm
                    )
                    d = eta * w_norm / denominator * d
                mus[name] = momentum * mus[name] + d
                p -= lr * mus[name]
    return {name: (p.detach(), mus[name]) for name, p in net.named_parameters()}


def _sslib_lars(net, steps, lr, momentum, wd, eta, trust_ratio):
    """The same steps with sslib's LARS over ``param_groups(net)``; same return as :func:`_source_lars`."""
    opt = LARS(param_groups(net, wd), lr=lr, momentum=momentum, eta=eta, trust_ratio=trust_ratio)
    for _ in range(steps):
        _backward(net)
        opt.step()
    return {name: (p.detach(), opt.state[p]["momentum_buffer"]) for name, p in net.named_parameters()}


# wd * ||w|| is about ||g|| here: the moco trust ratio is 6% (last layer) to 35% (first) larger.
SOURCE_STEP = dict(lr=0.7, momentum=0.9, wd=0.5, eta=0.02)


@pytest.mark.parametrize("trust_ratio", ["paper", "moco"])
def test_lars_trust_ratio_forms_match_their_sources(trust_ratio):
    got = _sslib_lars(_tiny_net(), 2, trust_ratio=trust_ratio, **SOURCE_STEP)
    want = _source_lars(_tiny_net(), 2, trust_ratio=trust_ratio, **SOURCE_STEP)
    assert got.keys() == want.keys() and len(got) == 6  # 2 Linear weights; 2 biases, BN weight and bias
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_lars_trust_ratio_forms_differ_when_weight_decay_matters():
    paper = _sslib_lars(_tiny_net(), 1, trust_ratio="paper", **SOURCE_STEP)
    moco = _sslib_lars(_tiny_net(), 1, trust_ratio="moco", **SOURCE_STEP)
    net = _tiny_net()
    _backward(net)
    for name, p in net.named_parameters():
        step_paper, step_moco = p - paper[name][0], p - moco[name][0]
        if p.ndim == 1:  # not adapted: the same plain momentum step
            torch.testing.assert_close(step_moco, step_paper, rtol=0, atol=0)
            continue
        # Same direction, step norms in the ratio (||g|| + wd ||w||) / ||g + wd w|| > 1.
        w, g, wd = p.detach(), p.grad, SOURCE_STEP["wd"]
        norm = torch.linalg.vector_norm
        ratio = (norm(g) + wd * norm(w)) / norm(g + wd * w)
        assert ratio > 1.05, name
        torch.testing.assert_close(step_moco, ratio * step_paper, rtol=1e-12, atol=0)


def test_excluded_group_is_plain_sgd_momentum_without_weight_decay():
    excluded = {"lars_exclude": True, "weight_decay": 0.1}
    got = _train(lambda g: LARS(g, lr=0.1, momentum=0.9, eta=0.02), excluded, steps=3)
    want = _train(lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9, weight_decay=0.0), steps=3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    adapted = _train(lambda g: LARS(g, lr=0.1, momentum=0.9, weight_decay=0.1, eta=0.02), steps=3)
    assert not torch.allclose(adapted, want)


def test_lars_eps_joins_the_trust_ratios_denominator():
    """apex's LARC and solo-learn: eta ||w|| / (||g|| + wd ||w|| + eps); MoCo v3's form takes it too."""
    lr, wd, eta, eps = 0.5, 0.01, 0.02, 0.3  # an eps large enough to see
    w = W0.clone()
    g = _grad(w)
    trust = eta * float(w.norm()) / (float(g.norm()) + wd * float(w.norm()) + eps)
    expected = w - lr * trust * (g + wd * w)
    got = _train(lambda p: LARS(p, lr=lr, momentum=0.9, weight_decay=wd, eta=eta, eps=eps), steps=1)
    torch.testing.assert_close(got, expected, rtol=1e-14, atol=0)
    moco = _train(lambda p: LARS(p, lr=lr, weight_decay=wd, eta=eta, eps=eps, trust_ratio="moco"), steps=1)
    d = g + wd * w
    torch.testing.assert_close(
        moco, w - lr * eta * float(w.norm()) / (float(d.norm()) + eps) * d, rtol=1e-14, atol=0
    )
    with pytest.raises(ValueError, match=r"^optim.kwargs.eps must be a number >= 0, got -1.0$"):
        LARS([nn.Parameter(W0.clone())], lr=lr, eps=-1.0)


def test_lars_zero_norms_use_unit_trust_ratio():
    zeros = torch.zeros_like(W0)
    got = _train(lambda g: LARS(g, lr=0.1, momentum=0.9, weight_decay=0.01), steps=1, w0=zeros)
    torch.testing.assert_close(got, zeros - 0.1 * _grad(zeros), rtol=0, atol=1e-12)

    p = nn.Parameter(W0.clone())
    p.grad = torch.zeros_like(p)
    LARS([p], lr=0.1, weight_decay=0.01).step()
    assert torch.isfinite(p).all()
    torch.testing.assert_close(p.detach(), W0 - 0.1 * 0.01 * W0, rtol=0, atol=1e-12)


def test_lars_moco_trust_ratio_at_zero_norms():
    # w = 0: trust 1. g = 0: ||g + wd w|| = wd ||w|| > 0, so trust = eta / wd and the step is lr * eta * w.
    zeros = torch.zeros_like(W0)
    moco = dict(lr=0.1, momentum=0.9, weight_decay=0.01, eta=0.02, trust_ratio="moco")
    got = _train(lambda g: LARS(g, **moco), steps=1, w0=zeros)
    torch.testing.assert_close(got, zeros - 0.1 * _grad(zeros), rtol=0, atol=1e-12)

    p = nn.Parameter(W0.clone())
    p.grad = torch.zeros_like(p)
    LARS([p], **moco).step()
    torch.testing.assert_close(p.detach(), W0 - 0.1 * 0.02 * W0, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0.0}, "lr .*0.0"),
        ({"lr": 0.1, "momentum": 1.0}, "momentum .*1.0"),
        ({"lr": 0.1, "eta": 0.0}, "eta .*0.0"),
        ({"lr": 0.1, "weight_decay": -1}, "weight_decay .*-1"),
        ({"lr": 0.1, "trust_ratio": "solo"}, "trust_ratio must be one of paper, moco, got 'solo'"),
    ],
)
def test_lars_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match) as err:
        LARS([nn.Parameter(torch.ones(2))], **kwargs)
    assert "\n" not in str(err.value)


def test_lars_state_saved_without_trust_ratio_loads_as_paper():
    p = nn.Parameter(W0.clone())
    saved = LARS([p], lr=0.1).state_dict()
    del saved["param_groups"][0]["trust_ratio"]
    opt = LARS([p], lr=0.1, trust_ratio="moco")
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["trust_ratio"] == "paper"


def _ids(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2), nn.LayerNorm(2)
    )


def test_param_groups_split_bias_and_norm():
    net = _net()
    net[3].bias.requires_grad_(False)
    adapted, excluded = param_groups(net, weight_decay=1e-4)
    assert _ids(adapted) == {id(net[0].weight), id(net[3].weight)}
    assert _ids(excluded) == {
        id(net[0].bias),
        id(net[1].weight),
        id(net[1].bias),
        id(net[4].weight),
        id(net[4].bias),
    }
    assert (adapted["weight_decay"], adapted["lars_exclude"]) == (1e-4, False)
    assert (excluded["weight_decay"], excluded["lars_exclude"]) == (0.0, True)

    (only,) = param_groups(net, weight_decay=1e-4, exclude_bias_norm=False)
    assert len(only["params"]) == 7 and not only["lars_exclude"]


def test_build_optimizer():
    net = _net()
    opt = build_optimizer("lars", net, lr=0.3, weight_decay=1e-6, eta=0.001)
    assert isinstance(opt, LARS)
    assert [g["lars_exclude"] for g in opt.param_groups] == [False, True]
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0]
    assert opt.param_groups[0]["eta"] == 0.001 and opt.param_groups[0]["momentum"] == 0.9

    sgd = build_optimizer("sgd", net.parameters(), lr=0.1, weight_decay=0.0, momentum=0.5, nesterov=True)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.5

    adamw = build_optimizer("adamw", net, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.9, 0.95)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("adam", 0.1, 0.0), {}, "adamw, lars, sgd"),
        (("sgd", 0.0, 0.0), {}, "lr.*0.0"),
        (("sgd", 0.1, -0.1), {}, "weight_decay.*-0.1"),
        (("lars", 0.1, 0.0), {"trust": 1.0}, "trust"),
    ],
)
def test_build_optimizer_errors_are_one_line(args, kwargs, match):
    name, lr, wd = args
    with pytest.raises(ValueError, match=match) as err:
        build_optimizer(name, _net(), lr=lr, weight_decay=wd, **kwargs)
    assert "\n" not in str(err.value)


def test_warmup_cosine_values():
    kw = dict(total_steps=110, warmup_steps=10, base_value=1.0, final_value=0.1, warmup_start=0.01)
    assert warmup_cosine(0, **kw) == pytest.approx(0.01)
    assert warmup_cosine(5, **kw) == pytest.approx(0.505)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.55)
    assert warmup_cosine(35, **kw) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)
    assert warmup_cosine(110, **kw) == pytest.approx(0.1)
    assert warmup_cosine(500, **kw) == pytest.approx(0.1)
    assert warmup_cosine(0, 10, 0, base_value=2.0) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(0, 10, 11, base_value=1.0)


def test_a_warm_up_that_ends_at_the_peak_is_numpys_linspace():
    """DINO's utils.py L191 and SwAV's main_swav.py L178: np.linspace(start, base, W), the last warm-up
    step at the peak; the cosine part is the same as without it."""
    kw = dict(total_steps=110, warmup_steps=10, base_value=1.0, final_value=0.1, warmup_start=0.01)
    linspace = [0.01 + 0.99 * i / 9 for i in range(10)]
    got = [warmup_cosine(i, ends_at_peak=True, **kw) for i in range(10)]
    assert got == pytest.approx(linspace, rel=1e-15)
    for step in (10, 35, 110):
        assert warmup_cosine(step, ends_at_peak=True, **kw) == warmup_cosine(step, **kw)
    assert (
        warmup_cosine(0, 10, 1, base_value=1.0, warmup_start=0.3, ends_at_peak=True) == 0.3
    )  # linspace(.., 1)


def test_cosine_ramp_and_scaled_lr():
    assert cosine_ramp(0, 100, 0.99, 1.0) == pytest.approx(0.99)
    assert cosine_ramp(50, 100, 0.99, 1.0) == pytest.approx(0.995)
    assert cosine_ramp(100, 100, 0.75, 2 / 3) == pytest.approx(2 / 3)
    assert cosine_ramp(25, 100, 0.75, 2 / 3) < 0.75
    assert scaled_lr(0.3, 512) == pytest.approx(0.6)
    assert scaled_lr(1.0, 64, reference=128) == pytest.approx(0.5)


def test_scheduler_follows_warmup_cosine_and_survives_state_dict_round_trip():
    def make():
        opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.4, momentum=0.9)
        return opt, build_scheduler(
            opt, total_steps=20, warmup_steps=5, final_lr_ratio=0.1, warmup_start_ratio=0.2
        )

    opt, sched = make()
    expected = [0.4 * warmup_cosine(s, 20, 5, 1.0, 0.1, 0.2) for s in range(25)]
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    buffer = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_opt, resumed = make()
    resumed_opt.load_state_dict(saved["opt"])
    resumed.load_state_dict(saved["sched"])
    resumed_lrs = []
    for _ in range(17):
        lrs.append(opt.param_groups[0]["lr"])
        resumed_lrs.append(resumed_opt.param_groups[0]["lr"])
        for o, s in ((opt, sched), (resumed_opt, resumed)):
            o.step()
            s.step()
    assert lrs == pytest.approx(expected)
    assert resumed_lrs == pytest.approx(expected[8:])


def _mixed_net() -> nn.Module:
    """Conv, BatchNorm and linear layers in float64: weights in the trust-ratio group, the rest excluded."""
    torch.manual_seed(0)
    return nn.Sequential(_net(), nn.Linear(2, 3), nn.Linear(3, 3, bias=False)).double()


NO_GRAD_AND_ZERO_WEIGHT = (8, 10)  # positions in _mixed_net().parameters(): net[1].weight, net[2].weight


def _lars_steps(foreach: bool | None, device: str = "cpu", steps: int = 3, **kwargs) -> tuple[list, list]:
    """Parameters and momentum buffers after ``steps`` LARS steps on fixed gradients, one weight of zeros
    (trust 1) and one parameter without a gradient (left alone)."""
    net = _mixed_net().to(device)
    with torch.no_grad():
        net[2].weight.zero_()
    opt = LARS(param_groups(net, kwargs.pop("weight_decay", 0.01)), lr=0.1, foreach=foreach, **kwargs)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in net.parameters():
            p.grad = torch.randn(p.shape, generator=generator, dtype=p.dtype).to(device)
        net[1].weight.grad = None
        opt.step()
    params = [p.detach().cpu() for p in net.parameters()]
    return params, [opt.state[p].get("momentum_buffer") for p in net.parameters()]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"trust_ratio": "moco"},
        {"clip_lr": True, "eta": 10.0},
        {"momentum": 0.0},
        {"weight_decay": 0.0},
    ],
)
def test_lars_foreach_batching_takes_the_same_steps_as_one_tensor_at_a_time(kwargs):
    per_tensor, buffers = _lars_steps(False, **dict(kwargs))
    batched, batched_buffers = _lars_steps(True, **dict(kwargs))
    untouched, _ = _lars_steps(False, steps=0)
    for a, b in zip(per_tensor, batched, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(buffers, batched_buffers, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    no_grad, zero_weight = NO_GRAD_AND_ZERO_WEIGHT
    torch.testing.assert_close(per_tensor[no_grad], untouched[no_grad], rtol=0, atol=0)  # no step
    assert buffers[no_grad] is None
    assert all(
        not torch.equal(a, b)
        for i, (a, b) in enumerate(zip(per_tensor, untouched, strict=True))
        if i != no_grad
    )
    assert untouched[zero_weight].abs().sum() == 0


def test_lars_batches_by_device_and_dtype_only_when_asked_or_on_cuda():
    from sslib.optim.lars import _chunks

    tensors = [torch.zeros(2), torch.zeros(3, dtype=torch.float64), torch.zeros(4), torch.zeros(1)]
    assert _chunks(tensors, None) == [[t] for t in tensors]  # CPU: one tensor at a time
    assert _chunks(tensors, False) == [[t] for t in tensors]
    batched = _chunks(tensors, True)
    assert [[id(t) for t in chunk] for chunk in batched] == [
        [id(tensors[0]), id(tensors[2]), id(tensors[3])],
        [id(tensors[1])],
    ]


def test_lars_state_saved_without_foreach_loads_with_the_device_default():
    p = nn.Parameter(W0.clone())
    saved = LARS([p], lr=0.1).state_dict()
    del saved["param_groups"][0]["foreach"]
    opt = LARS([p], lr=0.1, foreach=True)
    opt.load_state_dict(saved)
    assert opt.param_groups[0]["foreach"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lars_on_cuda_batches_and_takes_the_cpu_steps():
    from sslib.optim.lars import _chunks

    on_cuda = [torch.zeros(2, device="cuda"), torch.zeros(3, device="cuda")]
    assert len(_chunks(on_cuda, None)) == 1
    cpu, _ = _lars_steps(False, trust_ratio="moco")
    cuda, _ = _lars_steps(None, device="cuda", trust_ratio="moco")
    for a, b in zip(cpu, cuda, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
