"""A loaded schedule keeps its own length and base values: a run continued with more steps (or another lr)
follows the schedule of its new settings from the step the saved one had reached."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sslib.optim.schedules import build_scheduler, warmup_cosine


def make(total_steps: int, lr: float = 0.4):
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=lr, momentum=0.9, weight_decay=0.1)
    sched = build_scheduler(opt, total_steps, warmup_steps=2, final_lr_ratio=0.1, final_wd_ratio=0.5)
    return opt, sched


def advance(opt, sched, steps: int) -> None:
    for _ in range(steps):
        opt.step()
        sched.step()


@pytest.mark.parametrize("lr", [0.4, 0.8])
def test_a_loaded_schedule_continues_on_its_own_length_and_lr_from_the_saved_step(lr):
    opt, sched = make(total_steps=10)
    advance(opt, sched, 6)
    longer_opt, longer = make(total_steps=20, lr=lr)
    longer_opt.load_state_dict(opt.state_dict())
    longer.load_state_dict(sched.state_dict())

    for step in range(6, 20):
        group = longer_opt.param_groups[0]
        assert group["lr"] == pytest.approx(lr * warmup_cosine(step, 20, 2, 1.0, 0.1)), step
        assert group["weight_decay"] == pytest.approx(0.1 * warmup_cosine(step, 20, 0, 1.0, 0.5)), step
        advance(longer_opt, longer, 1)
    assert longer.total_steps == 20 and longer.get_last_lr() == [longer_opt.param_groups[0]["lr"]]
