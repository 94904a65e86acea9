"""``Ramp`` schedules: exact values of the cosine and linear kinds over the run or over a span of epochs
(DINO's teacher-temperature warm-up), then constant; config parsing and one-line errors."""

from __future__ import annotations

import math

import pytest

from sslib.optim.ramps import Ramp, ramps

STEPS, PER_EPOCH = 100, 10.0


def test_linear_ramp_over_the_whole_run():
    ramp = Ramp(1.0, 3.0, "linear")
    values = [ramp.value(step, STEPS, PER_EPOCH) for step in (0, 25, 50, 99, 100, 130)]
    assert values == pytest.approx([1.0, 1.5, 2.0, 2.98, 3.0, 3.0], rel=1e-15)


def test_cosine_ramp_over_the_whole_run_is_the_closed_form():
    ramp = Ramp(0.75, 2 / 3)  # MIRA's beta
    for step in (0, 25, 50, 80, 100, 130):
        t = min(step, STEPS) / STEPS
        expected = 0.75 + (2 / 3 - 0.75) * (1 - math.cos(math.pi * t)) / 2
        assert ramp.value(step, STEPS, PER_EPOCH) == pytest.approx(expected, rel=1e-15)
    assert ramp.value(50, STEPS, PER_EPOCH) == pytest.approx((0.75 + 2 / 3) / 2, rel=1e-15)


def test_linear_warm_up_over_epochs_then_constant_as_dinos_teacher_temperature():
    """0.04 -> 0.07 over 3 epochs of 10 steps: 0.01 per epoch, 0.001 per step, 0.07 from step 30 on."""
    ramp = Ramp(0.04, 0.07, "linear", epochs=3)
    steps = (0, 1, 10, 15, 29, 30, 31, 99)
    expected = [0.04, 0.041, 0.05, 0.055, 0.069, 0.07, 0.07, 0.07]
    assert [ramp.value(s, STEPS, PER_EPOCH) for s in steps] == pytest.approx(expected, rel=1e-13)
    # at epoch starts: start + (end - start) e / N; DINO's per-epoch np.linspace gives e / (N - 1)
    assert ramp.value(20, STEPS, PER_EPOCH) == pytest.approx(0.04 + 0.03 * 2 / 3, rel=1e-13)


def test_per_epoch_ramp_is_dinos_linspace_held_for_each_epoch():
    """unit=epoch: np.linspace(0.04, 0.07, 3)[epoch] for the epoch of each step, then 0.07 (main_dino.py
    L374-378); the epoch comes from the caller when given, else from the step."""
    ramp = Ramp(0.04, 0.07, "linear", epochs=3, unit="epoch")
    linspace = [0.04 + 0.03 * e / 2 for e in range(3)]
    steps = (0, 9, 10, 19, 20, 29, 30, 99)
    expected = [linspace[0]] * 2 + [linspace[1]] * 2 + [linspace[2]] * 4
    assert [ramp.value(s, STEPS, PER_EPOCH) for s in steps] == pytest.approx(expected, rel=1e-15)
    assert ramp.value(0, STEPS, PER_EPOCH, epoch=1) == pytest.approx(linspace[1], rel=1e-15)
    assert Ramp(0.0, 1.0, "linear", epochs=1, unit="epoch").value(0, STEPS, PER_EPOCH) == 1.0
    whole_run = Ramp(0.0, 1.0, "cosine", unit="epoch")  # 10 epochs: the end at epoch 9
    assert whole_run.value(95, STEPS, PER_EPOCH) == 1.0
    assert whole_run.value(45, STEPS, PER_EPOCH) == pytest.approx((1 - math.cos(math.pi * 4 / 9)) / 2)


def test_cosine_over_epochs_and_fractional_spans():
    assert Ramp(0.0, 1.0, epochs=2).value(10, STEPS, PER_EPOCH) == pytest.approx(0.5, rel=1e-15)
    assert Ramp(0.0, 1.0, epochs=2).value(25, STEPS, PER_EPOCH) == 1.0
    half = Ramp(0.0, 1.0, "linear", epochs=0.5)  # 5 steps
    assert half.value(2, STEPS, PER_EPOCH) == pytest.approx(0.4, rel=1e-15)
    tiny = Ramp(0.0, 1.0, "linear", epochs=0.01)  # under one step: reaches the end after step 0
    assert (tiny.value(0, STEPS, PER_EPOCH), tiny.value(1, STEPS, PER_EPOCH)) == (0.0, 1.0)


def test_ramps_from_a_config_mapping():
    spec = {
        "beta": {"start": 0.75, "end": 0.5},
        "temperature": {"start": 0.04, "end": 0.07, "kind": "linear"},
    }
    assert ramps(spec) == {"beta": Ramp(0.75, 0.5), "temperature": Ramp(0.04, 0.07, "linear")}
    assert ramps(None) == {} == ramps({})


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"kind": "exp"}, "^x.kind must be one of cosine, linear, got 'exp'$"),
        ({"epochs": 0}, r"^x.epochs must be a finite number > 0 or null \(whole run\), got 0"),
        ({"end": "high"}, "^x.end must be a finite number, got 'high'"),
        ({"strat": 1.0}, "^x has unknown key\\(s\\) strat, missing -; allowed: start, end, kind, epochs"),
        ({"start": None}, "^x.start must be a finite number, got None"),
    ],
)
def test_bad_schedules_are_one_line_errors(spec, match):
    with pytest.raises(ValueError, match=match) as err:
        ramps({"x": {"start": 1.0, "end": 2.0, **spec}})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="^x has .*missing end"):
        ramps({"x": {"start": 1.0}})
    with pytest.raises(ValueError, match="total_steps must be an integer >= 1, got 0"):
        Ramp(0.0, 1.0, "linear").value(0, 0, PER_EPOCH)
