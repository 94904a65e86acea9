"""The EMA teacher: the update formula on parameters and buffers, and the cosine ramp of its momentum
(the update inside training runs is checked with ``probes.EMAProbe`` in the methods' tests)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslib.modules.ema import ema_update, make_teacher
from sslib.optim import cosine_ramp
from tests.helpers.probes import momentum_closed_form


def student_and_teacher(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """A float64 Linear + BatchNorm student and its teacher, then the student's parameters and running
    statistics moved away from the teacher's (as a few training steps would)."""
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
    teacher = make_teacher(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    student.train()(torch.randn(6, 3, dtype=torch.float64))  # updates the student's running statistics
    return student, teacher


def snapshot(module: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [p.detach().clone() for p in module.parameters()], [b.clone() for b in module.buffers()]


@pytest.mark.parametrize("momentum", [0.0, 0.3, 0.9, 1.0])
def test_ema_update_is_the_convex_combination_of_parameters_and_keeps_the_teachers_buffers(momentum):
    student, teacher = student_and_teacher()
    (t_params, t_buffers), (s_params, s_buffers) = snapshot(teacher), snapshot(student)
    assert not any(torch.equal(t, s) for t, s in zip(t_buffers[:2], s_buffers[:2], strict=True))
    ema_update(teacher, student, momentum)
    for t0, s, t1 in zip(t_params, s_params, teacher.parameters(), strict=True):
        torch.testing.assert_close(t1, momentum * t0 + (1 - momentum) * s, rtol=1e-14, atol=1e-15)
        assert not t1.requires_grad
    for t0, t1 in zip(t_buffers, teacher.buffers(), strict=True):  # running mean, var and batch count
        assert torch.equal(t1, t0)
    assert all(torch.equal(s, p) for s, p in zip(s_params, student.parameters(), strict=True))


def test_make_teacher_is_a_frozen_copy_with_its_own_storage():
    student = nn.Linear(3, 2)
    teacher = make_teacher(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    with torch.no_grad():
        student.weight.add_(1.0)
    assert not torch.equal(teacher.weight, student.weight)


def test_ema_update_bad_input_is_a_one_line_error():
    student, teacher = student_and_teacher()
    for other, momentum, match in [
        (student, 1.5, r"momentum must be in \[0, 1\], got 1.5"),
        (nn.Linear(3, 4).double(), 0.9, "teacher has 4 parameters, student 2"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            ema_update(teacher, other, momentum)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(("base", "final"), [(0.99, 1.0), (0.996, 1.0), (0.9, 0.5)])
def test_cosine_ramp_is_the_closed_form_at_the_start_middle_end_and_after(base, final):
    total = 40
    for step in (0, 10, 20, 33, 40, 47):
        assert cosine_ramp(step, total, base, final) == pytest.approx(
            momentum_closed_form(step, total, base, final), rel=1e-15, abs=1e-15
        )
    assert cosine_ramp(0, total, base, final) == base
    assert cosine_ramp(20, total, base, final) == pytest.approx((base + final) / 2, rel=1e-15)
    assert cosine_ramp(40, total, base, final) == cosine_ramp(47, total, base, final) == final
