"""MLP projector and prototype head."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from sslib.heads import MLP, PrototypeHead


def test_mlp_structure_and_output_dim():
    mlp = MLP([16, 32, 24, 8])
    types = [type(m) for m in mlp]
    assert types == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 24), (24, 8)]
    assert linears[-1].bias is not None
    assert mlp(torch.randn(4, 16)).shape == (4, 8)


def test_mlp_single_layer_is_plain_linear():
    mlp = MLP([16, 8], last_bias=False)
    assert len(mlp) == 1 and isinstance(mlp[0], nn.Linear) and mlp[0].bias is None


def test_mlp_last_norm_standardises_output():
    mlp = MLP([16, 32, 8], last_norm=True)
    last = mlp[-1]
    assert isinstance(last, nn.BatchNorm1d) and not last.affine
    out = mlp(torch.randn(64, 16))
    torch.testing.assert_close(out.mean(0), torch.zeros(8), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.var(0, unbiased=False), torch.ones(8), atol=1e-3, rtol=0)


@pytest.mark.parametrize("dims", [[], [16], [16, 0], [16, -2, 8], [16, 2.5], [True, 8]])
def test_mlp_rejects_bad_dims(dims):
    with pytest.raises(ValueError, match="dims") as info:
        MLP(dims)
    assert "\n" not in str(info.value)


def test_prototype_logits_are_cosines_and_scale_invariant():
    torch.manual_seed(0)
    head = PrototypeHead(16, n_prototypes=10)
    x = torch.randn(5, 16)
    logits = head(x)
    assert logits.shape == (5, 10)
    assert logits.abs().max() <= 1 + 1e-6
    expected = nn.functional.normalize(x, dim=-1) @ nn.functional.normalize(head.prototypes(), dim=-1).T
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(head(7.5 * x), logits)


def test_prototype_norms_stay_one_after_optimizer_step():
    torch.manual_seed(0)
    head = PrototypeHead(16, n_prototypes=10)
    (direction,) = head.parameters_to_freeze()
    before = direction.detach().clone()
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=10.0)
    head(torch.randn(8, 16)).pow(3).sum().backward()
    opt.step()
    assert not torch.allclose(direction, before)
    assert head.prototypes().shape == (10, 16)
    torch.testing.assert_close(head.prototypes().norm(dim=1), torch.ones(10))


def test_prototype_gain_is_fixed_and_not_trainable():
    head = PrototypeHead(16, n_prototypes=10)
    gain = head.layer.parametrizations.weight.original0
    assert not gain.requires_grad
    assert torch.equal(gain, torch.ones_like(gain))
    trainable = [p for p in head.parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0] is head.parameters_to_freeze()[0]


def test_prototype_zero_input_is_finite():
    head = PrototypeHead(16, n_prototypes=10)
    x = torch.zeros(3, 16, requires_grad=True)
    logits = head(x)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_prototype_head_deepcopies_for_ema_teacher():
    head = PrototypeHead(16, n_prototypes=10)
    teacher = copy.deepcopy(head)
    x = torch.randn(4, 16)
    torch.testing.assert_close(teacher(x), head(x))
    assert teacher.parameters_to_freeze()[0] is not head.parameters_to_freeze()[0]


def test_prototype_head_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_prototypes"):
        PrototypeHead(16, n_prototypes=0)


def test_set_prototypes_gives_normalised_rows():
    head = PrototypeHead(16, n_prototypes=10)
    rows = torch.randn(10, 16) * 3
    head.set_prototypes(rows)
    unit = torch.nn.functional.normalize(rows, dim=1)
    torch.testing.assert_close(head.prototypes(), unit)
    torch.testing.assert_close(head(rows[:3]), unit[:3] @ unit.t())  # row i scores 1 on prototype i
    with pytest.raises(ValueError, match=r"prototypes must have shape \(10, 16\), got \(9, 16\)"):
        head.set_prototypes(rows[:9])


def test_dino_head_without_a_normalised_last_layer_trains_its_gains():
    torch.manual_seed(0)
    fixed, free = PrototypeHead(16, 12), PrototypeHead(16, 12, norm_last_layer=False)
    weight = free.layer.parametrizations.weight
    assert [p.requires_grad for p in (weight.original0, weight.original1)] == [True, True]
    assert (
        len(fixed.parameters_to_freeze()) == 1 and len(free.parameters_to_freeze()) == 2
    )  # DINO freezes both
    x = torch.randn(6, 16)
    free(x).pow(2).sum().backward()
    assert weight.original0.grad is not None and weight.original0.grad.abs().sum() > 0
    with torch.no_grad():
        weight.original0.mul_(3.0)
    norms = free.prototypes().norm(dim=1)
    torch.testing.assert_close(norms, torch.full((12,), 3.0))  # logits are g_k times a cosine
    torch.testing.assert_close(
        free(x), 3.0 * torch.nn.functional.normalize(x, dim=1) @ (free.prototypes() / 3.0).T
    )
    with pytest.raises(ValueError, match="norm_last_layer must be true or false, got 'no'"):
        PrototypeHead(16, 12, norm_last_layer="no")


def test_dino_head_initialisation_is_a_truncated_normal_with_zero_biases():
    torch.manual_seed(0)
    head = MLP([384, 2048, 2048, 256], norm="none", activation="gelu", init="trunc_normal")
    linears = [m for m in head if isinstance(m, nn.Linear)]
    assert len(linears) == 3 and all(float(m.bias.abs().max()) == 0.0 for m in linears)
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert float(weights.abs().max()) <= 2.0 and abs(float(weights.std()) - 0.02) < 1e-3
    default = MLP([384, 2048, 256], norm="none")
    assert float(default[0].bias.abs().max()) > 0  # PyTorch's own initialisation otherwise
    with pytest.raises(ValueError, match="^init must be one of default, trunc_normal, got 'xavier'"):
        MLP([4, 4], init="xavier")


def test_a_renormalised_head_scores_as_the_weight_normalised_one_and_takes_the_full_gradient():
    """SwAV's plain Linear (rows renormalised before every step) and the weight-normalised head give the
    same logits for the same unit rows; the plain one's gradient keeps its radial part, which the
    weight-normalised one projects out (g_v = (I - w w^T) g_w for unit rows w)."""
    torch.manual_seed(0)
    plain = PrototypeHead(16, 10, parametrization="renormalize")
    normed = PrototypeHead(16, 10)
    torch.testing.assert_close(plain.prototypes().norm(dim=1), torch.ones(10))  # unit from the start
    normed.set_prototypes(plain.prototypes().detach())
    x = torch.randn(6, 16)
    torch.testing.assert_close(plain(x), normed(x))
    plain(x).pow(3).sum().backward()
    normed(x).pow(3).sum().backward()
    (w,) = plain.parameters_to_freeze()
    (v,) = normed.parameters_to_freeze()
    unit = w.detach()
    radial = (w.grad * unit).sum(dim=1, keepdim=True) * unit
    torch.testing.assert_close(v.grad, w.grad - radial, rtol=1e-5, atol=1e-6)
    assert float(radial.norm()) > 0.05 * float(w.grad.norm())  # a part the weight-normalised head drops


def test_renormalize_projects_the_rows_back_to_unit_norm_and_set_prototypes_normalises():
    torch.manual_seed(0)
    head = PrototypeHead(8, 5, parametrization="renormalize")
    with torch.no_grad():
        head.layer.weight.mul_(torch.arange(1.0, 6.0)[:, None])
    direction = torch.nn.functional.normalize(head.layer.weight.detach(), dim=1)
    head.renormalize_()
    torch.testing.assert_close(head.prototypes(), direction)
    rows = torch.randn(5, 8) * 4
    head.set_prototypes(rows)
    torch.testing.assert_close(head.prototypes(), torch.nn.functional.normalize(rows, dim=1))
    normed = PrototypeHead(8, 5)
    before = normed.prototypes().detach().clone()
    normed.renormalize_()  # nothing to do: unit rows by construction
    assert torch.equal(normed.prototypes(), before)


def test_a_weight_normalised_checkpoint_loads_into_a_renormalised_head():
    """SwAV checkpoints written before the renormalised head hold (g, v): they load as g v / ||v||."""
    torch.manual_seed(0)
    old = PrototypeHead(8, 5, norm_last_layer=False)
    with torch.no_grad():
        old.layer.get_parameter("parametrizations.weight.original0").mul_(2.0)
    new = PrototypeHead(8, 5, parametrization="renormalize")
    new.load_state_dict(old.state_dict())
    torch.testing.assert_close(new.prototypes(), old.prototypes().detach())
    assert list(new.state_dict()) == ["layer.weight"]


def test_bad_prototype_parametrizations_are_one_line_errors():
    with pytest.raises(
        ValueError,
        match=r"^method.prototype_parametrization must be one of weight_norm, renormalize, got 'plain'$",
    ):
        PrototypeHead(8, 5, parametrization="plain")
    with pytest.raises(
        ValueError, match=r"^method.norm_last_layer=false trains the prototypes' gains"
    ) as err:
        PrototypeHead(8, 5, norm_last_layer=False, parametrization="renormalize")
    assert "\n" not in str(err.value)
