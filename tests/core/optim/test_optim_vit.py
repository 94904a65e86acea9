"""What ViT recipes need from the optimiser: the weight-decay cosine, its exclusions, DINO's clipping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sslib import backbones
from sslib.optim import clip_before_step, clip_per_parameter_, param_groups
from sslib.optim.params import token_names
from sslib.optim.schedules import build_scheduler


def tiny_vit() -> nn.Module:
    return backbones.build("vit_tiny", patch_size=4, img_size=16, embed_dim=16, depth=1, num_heads=2)[0]


def dino_cosine_scheduler(base: float, final: float, total: int) -> np.ndarray:
    """facebookresearch/dino's utils.cosine_scheduler without warm-up (utils.py L187-198), per iteration."""
    iters = np.arange(total)
    return final + 0.5 * (base - final) * (1 + np.cos(np.pi * iters / len(iters)))


def test_weight_decay_follows_dinos_cosine_and_spares_undecayed_groups():
    model = nn.Linear(4, 4)
    groups = param_groups(model, weight_decay=0.04)
    opt = torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.04)
    total = 50
    sched = build_scheduler(opt, total_steps=total, warmup_steps=5, final_wd_ratio=0.4 / 0.04)
    reference = dino_cosine_scheduler(0.04, 0.4, total)
    seen = []
    for _ in range(total):
        seen.append([g["weight_decay"] for g in opt.param_groups])
        opt.step()
        sched.step()
    np.testing.assert_allclose([s[0] for s in seen], reference, rtol=1e-12)
    assert all(s[1] == 0.0 for s in seen)  # the bias group is never decayed
    assert sched.get_last_lr()[0] == 0.0  # the lr cosine reached its end too
    restored = build_scheduler(
        torch.optim.AdamW(param_groups(model, 0.04), lr=1e-3), total, 5, final_wd_ratio=10.0
    )
    restored.load_state_dict(sched.state_dict())
    assert restored.last_epoch == total and restored.weight_decay_factor(25) == pytest.approx(
        reference[25] / 0.04
    )


def test_without_a_final_weight_decay_it_stays_constant():
    opt = torch.optim.AdamW(param_groups(nn.Linear(3, 3), 0.05), lr=1e-3)
    sched = build_scheduler(opt, total_steps=10, warmup_steps=0)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["weight_decay"] == 0.05


def test_biases_norms_position_embedding_and_class_token_are_not_decayed():
    vit = tiny_vit()
    wrapped = nn.ModuleDict({"backbone": vit, "projector": nn.Linear(16, 8)})
    assert token_names(wrapped) >= {"backbone.pos_embed", "backbone.cls_token"}
    names = {id(p): n for n, p in wrapped.named_parameters()}
    decayed, excluded = (
        {names[id(p)] for p in g["params"]} for g in param_groups(wrapped, 0.04, exclude_tokens=True)
    )
    assert {"backbone.pos_embed", "backbone.cls_token", "backbone.norm.weight", "projector.bias"} <= excluded
    assert all(n.endswith(".weight") and "norm" not in n for n in decayed)
    assert {
        "backbone.blocks.0.attn.qkv.weight",
        "backbone.patch_embed.proj.weight",
        "projector.weight",
    } <= decayed
    dino_groups = param_groups(wrapped, 0.04, exclude_tokens=False)  # DINO decays the 3-D tokens
    assert {"backbone.pos_embed", "backbone.cls_token"} <= {names[id(p)] for p in dino_groups[0]["params"]}
    assert dino_groups[1]["weight_decay"] == 0.0 and dino_groups[0]["weight_decay"] == 0.04


def test_each_gradient_tensor_is_clipped_alone_as_dinos_clip_gradients():
    torch.manual_seed(0)
    params = [nn.Parameter(torch.zeros(5)), nn.Parameter(torch.zeros(3, 2)), nn.Parameter(torch.zeros(2))]
    grads = [torch.randn(5) * 10, torch.randn(3, 2) * 0.01, None]
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else g.clone()
    clip_per_parameter_(params, 3.0)
    big = grads[0] * (3.0 / (grads[0].norm() + 1e-6))  # DINO: clip / (norm + 1e-6) when below 1
    torch.testing.assert_close(params[0].grad, big)
    assert math.isclose(float(params[0].grad.norm()), 3.0, rel_tol=1e-5)
    assert torch.equal(params[1].grad, grads[1]) and params[2].grad is None  # under the cap: untouched
    together = [nn.Parameter(torch.zeros_like(g)) for g in grads[:2]]
    for p, g in zip(together, grads[:2], strict=True):
        p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_(together, 3.0)  # Lightning's gradient_clip_val: one global norm
    assert not torch.allclose(together[1].grad, grads[1])  # which would have shrunk the small one too


def test_clipping_runs_inside_every_optimiser_step_for_the_chosen_parameters_only():
    clipped, free = nn.Linear(4, 4), nn.Linear(4, 1)
    opt = torch.optim.SGD([*clipped.parameters(), *free.parameters()], lr=0.0)
    clip_before_step(opt, clipped.parameters(), 0.5)
    for p in [*clipped.parameters(), *free.parameters()]:
        p.grad = torch.full_like(p, 10.0)
    opt.step()
    assert all(float(p.grad.norm()) == pytest.approx(0.5, rel=1e-4) for p in clipped.parameters())
    assert all(torch.equal(p.grad, torch.full_like(p, 10.0)) for p in free.parameters())
    with pytest.raises(ValueError, match=r"max_norm must be a finite number > 0, got 0"):
        clip_before_step(opt, clipped.parameters(), 0)
