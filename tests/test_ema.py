"""The EMA teacher: the update formula on parameters and buffers, the cosine ramp of its momentum, and
:class:`EMAProbe`, which records each update of a real training run for the methods' tests."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch import nn

from sslib.methods.ema import ema_update, make_teacher
from sslib.optim import cosine_ramp


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


def momentum_closed_form(step: int, total_steps: int, base: float, final: float) -> float:
    """BYOL's tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 with 1 generalised to ``final``, written
    as base + (final - base)(1 - cos(pi t / T)) / 2 (MIRA ``train.py`` lines 397-399), held from T on."""
    t = min(step, total_steps)
    return base + (final - base) * (1 - math.cos(math.pi * t / total_steps)) / 2


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


# --- the update inside a training run -------------------------------------------------------------


def _params(module: nn.Module, n: int = 256) -> list[torch.Tensor]:
    """The first ``n`` entries of every parameter (a ResNet's whole weights, 4 copies a step, would be slow)."""
    return [p.detach().flatten()[:n].clone() for p in module.parameters()]


class EMAProbe(L.Callback):
    """Records every EMA update of a run: ``(global_step, teacher before, student, teacher after)``, each
    a list of the first entries of every parameter.

    Callback hooks run before the module's own, so ``on_train_batch_end`` sees the teacher before the
    module's update (and the student after its optimiser step); the next ``on_train_batch_start``, or
    ``on_train_end``, sees the teacher after it.
    """

    def __init__(self) -> None:
        self.updates: list[tuple[int, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = []
        self._pending: tuple | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        student = pl_module.ssl_modules()
        parts = nn.ModuleDict({k: student[k] for k in pl_module.teacher})
        self._pending = (trainer.global_step, _params(pl_module.teacher), _params(parts))

    def _record(self, pl_module) -> None:
        if self._pending is not None:
            self.updates.append((*self._pending, _params(pl_module.teacher)))
            self._pending = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._record(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._record(pl_module)


def assert_updates_follow_the_ramp(probe: EMAProbe, total_steps: int, base: float, final: float) -> None:
    """The update after optimiser step k (k = 1..T, Lightning's ``global_step`` then) used momentum
    m_k = cosine_ramp(k, T): theta_t <- m_k theta_t + (1 - m_k) theta_s, to float32 rounding.

    This is MIRA's convention (``train.py`` lines 351, 397-399, 437: the update before the forward of
    step index k, after k steps, uses m(k)); DINO's ``main_dino.py`` line 348 uses m[k - 1]. The check
    also asserts the teacher moved enough for m_{k-1} to fail it.
    """
    assert [k for k, *_ in probe.updates] == list(range(1, total_steps + 1))
    atol, margin = 1e-6, 0.0
    for k, before, student, after in probe.updates:
        m = momentum_closed_form(k, total_steps, base, final)
        off_by_one = abs(m - momentum_closed_form(k - 1, total_steps, base, final))
        for t0, s, t1 in zip(before, student, after, strict=True):
            torch.testing.assert_close(t1, m * t0 + (1 - m) * s, rtol=0, atol=atol)
            margin = max(margin, off_by_one * float((s - t0).abs().max()))
    assert margin > 100 * atol
