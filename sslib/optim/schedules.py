"""Per-iteration schedules: learning-rate warm-up + cosine, weight-decay cosine, cosine ramps, linear lr scaling."""

from __future__ import annotations

import functools
import math
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from sslib.errors import ConfigError
from sslib.validation import check_int_at_least, check_positive


def _cosine_weight(progress: float) -> float:
    """``(1 + cos(pi * p)) / 2`` for ``p`` clamped to [0, 1]: 1 at the start, 0 at the end."""
    return 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def warmup_cosine(
    step: int,
    total_steps: int,
    warmup_steps: int,
    base_value: float,
    final_value: float = 0.0,
    warmup_start: float = 0.0,
    ends_at_peak: bool = False,
) -> float:
    """Linear warm-up then cosine decay, evaluated at iteration ``step``.

    ``step < W``: ``warmup_start + (base_value - warmup_start) * step / W``, or with ``ends_at_peak``
    ``... * step / max(1, W - 1)``, ``np.linspace(warmup_start, base_value, W)[step]``, whose last warm-up
    step already runs at ``base_value`` (facebookresearch/dino@7c446df utils.py L191,
    facebookresearch/swav@06b1b7c main_swav.py L178, solo-learn's ``LinearWarmupCosineAnnealingLR``);
    otherwise ``final_value + (base_value - final_value) * (1 + cos(pi * (step - W) / (T - W))) / 2``,
    held at ``final_value`` from ``step >= T`` on (``W = warmup_steps``, ``T = total_steps``).

    Args:
        step: The iteration, from 0.
        total_steps: T, the run's iterations, >= 1.
        warmup_steps: W, the warm-up's iterations, in [0, T].
        base_value: The peak value, reached at the end of the warm-up.
        final_value: The value at the end of the run.
        warmup_start: The value at step 0.
        ends_at_peak: Whether the last warm-up step already runs at ``base_value``.

    Returns:
        The value at ``step``.

    Raises:
        ConfigError: If ``total_steps`` < 1, ``warmup_steps`` < 0 or ``warmup_steps`` > ``total_steps``.
    """
    check_int_at_least("total_steps", total_steps, 1)
    check_int_at_least("warmup_steps", warmup_steps, 0)
    if warmup_steps > total_steps:
        raise ConfigError(f"warmup_steps must be <= total_steps ({total_steps}), got {warmup_steps}")
    if step < warmup_steps:
        span = max(1, warmup_steps - 1) if ends_at_peak else warmup_steps
        return warmup_start + (base_value - warmup_start) * step / span
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return final_value + (base_value - final_value) * _cosine_weight(progress)


def cosine_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """Cosine ramp ``end - (end - start) * (1 + cos(pi * step / total_steps)) / 2``.

    Equals ``start`` at step 0 and ``end`` from ``total_steps`` on. Used for the EMA momentum
    (0.99 -> 1), MIRA's beta (0.75 -> 2/3) and DINO's teacher temperature.

    Args:
        step: The iteration, from 0.
        total_steps: The ramp's length, >= 1.
        start: The value at step 0.
        end: The value from ``total_steps`` on.

    Returns:
        The value at ``step``.

    Raises:
        ConfigError: If ``total_steps`` < 1.
    """
    check_int_at_least("total_steps", total_steps, 1)
    return end - (end - start) * _cosine_weight(step / total_steps)


def scaled_lr(base_lr: float, batch_size: int, reference: int = 256) -> float:
    """Linear scaling rule (Goyal et al., 2017): ``base_lr * batch_size / reference``.

    Args:
        base_lr: The lr at the reference batch size, > 0.
        batch_size: The global batch size, >= 1.
        reference: The reference batch size, >= 1.

    Returns:
        The scaled lr.

    Raises:
        ConfigError: If an argument is out of its range.
    """
    check_positive("base_lr", base_lr)
    check_int_at_least("batch_size", batch_size, 1)
    check_int_at_least("reference", reference, 1)
    return base_lr * batch_size / reference


WARMUP_FROM_BASE = "base"


def resolve_warmup_start_ratio(value: float | str, lr_scale: float) -> float:
    """The warm-up's first lr as a ratio of the peak lr, for ``optim.warmup_start_ratio``.

    Args:
        value: A number ``>= 0``, returned as given, or ``"base"``, which starts at the unscaled base lr:
            the peak is ``base_lr * lr_scale``, so the ratio is ``1 / lr_scale``, e.g. 256 / 4096 = 1/16
            (0.3 -> 4.8) as in the official MIRA code (``train.py`` L230 ``--warm-up-start-lr 0.3``, not
            scaled with the batch as ``--lr`` is at L257). Below a global batch of 256 the ratio exceeds 1
            and the "warm-up" descends to the peak.
        lr_scale: Global batch / 256 under ``scale_lr``, else 1; > 0.

    Returns:
        The ratio.

    Raises:
        ConfigError: If ``lr_scale`` is not > 0 or ``value`` is neither a number >= 0 nor ``"base"``.
    """
    check_positive("lr_scale", lr_scale)
    if value == WARMUP_FROM_BASE:
        return 1.0 / lr_scale
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"warmup_start_ratio must be a number >= 0 or {WARMUP_FROM_BASE!r}, got {value!r}")
    return float(value)


class WarmupCosine(LambdaLR):
    """``LambdaLR`` whose factor is :func:`warmup_cosine`, optionally also moving the weight decay.

    Group ``g``'s lr is ``lr_g * warmup_cosine(t, T, W, 1, final_lr_ratio, warmup_start_ratio,
    warmup_ends_at_peak)``; with
    ``final_wd_ratio = r`` its weight decay is ``wd_g * (r + (1 - r) (1 + cos(pi t / T)) / 2)``, a cosine
    from the group's initial ``wd_g`` to ``r * wd_g`` over the whole run without warm-up (DINO's
    ``wd_schedule``: 0.04 -> 0.4, facebookresearch/dino@7c446df main_dino.py L244-248). Groups that start
    without decay keep none.

    Args:
        optimizer: The optimiser whose groups' lr (and weight decay) are scheduled.
        total_steps: T, the run's iterations.
        warmup_steps: W, the warm-up's iterations.
        final_lr_ratio: The lr at the end of the run, as a ratio of the peak.
        warmup_start_ratio: The lr at step 0, as a ratio of the peak.
        final_wd_ratio: r, the weight decay at the end of the run as a ratio of the initial one; ``None``
            keeps the weight decay constant.
        warmup_ends_at_peak: Whether the last warm-up step already runs at the peak lr.

    Raises:
        ConfigError: If the steps are out of range (:func:`warmup_cosine`) or ``final_wd_ratio`` is not
            a finite number >= 0.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: int,
        warmup_steps: int,
        final_lr_ratio: float = 0.0,
        warmup_start_ratio: float = 0.0,
        final_wd_ratio: float | None = None,
        warmup_ends_at_peak: bool = False,
    ) -> None:
        factor = functools.partial(
            warmup_cosine,
            total_steps=total_steps,
            warmup_steps=warmup_steps,
            base_value=1.0,
            final_value=final_lr_ratio,
            warmup_start=warmup_start_ratio,
            ends_at_peak=warmup_ends_at_peak,
        )
        factor(0)  # validate the arguments now rather than on the first step
        if final_wd_ratio is not None and not (math.isfinite(final_wd_ratio) and final_wd_ratio >= 0):
            raise ConfigError(
                f"final weight decay ratio must be a finite number >= 0, got {final_wd_ratio!r}"
            )
        self.total_steps = total_steps
        self.final_wd_ratio = final_wd_ratio
        self.base_wds = [float(g.get("weight_decay", 0.0)) for g in optimizer.param_groups]
        super().__init__(optimizer, lr_lambda=factor)

    def weight_decay_factor(self, step: int) -> float:
        """The multiplier of each group's initial weight decay at iteration ``step``.

        Args:
            step: The iteration, from 0.

        Returns:
            The multiplier; 1 without a weight-decay schedule.
        """
        if self.final_wd_ratio is None:
            return 1.0
        return warmup_cosine(step, self.total_steps, 0, 1.0, self.final_wd_ratio)

    def step(self, epoch: int | None = None) -> None:
        """Advance one iteration: the lr as ``LambdaLR``, then every group's weight decay.

        Args:
            epoch: Passed to ``LambdaLR.step`` (deprecated there; leave it ``None``).
        """
        super().step(epoch)
        self._set_weight_decay()

    def _set_weight_decay(self) -> None:
        factor = self.weight_decay_factor(self.last_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_wds, strict=True):
            group["weight_decay"] = base * factor

    # Set by the constructor from the run's settings; a loaded state does not replace them.
    OWN_SETTINGS = ("base_lrs", "total_steps", "final_wd_ratio", "base_wds")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue a saved schedule from its iteration (``last_epoch``) on this schedule.

        Every group's lr and weight decay are set to this schedule's values there. The length, the base
        lrs and the weight decays stay those this scheduler was built with, so a run continued with more
        steps (or another lr) follows the schedule of its new settings from the step it had reached; with
        the same settings nothing changes.

        Args:
            state_dict: A state saved by ``state_dict()``.
        """
        own = {name: getattr(self, name) for name in self.OWN_SETTINGS}
        super().load_state_dict(state_dict)
        self.__dict__.update(own)
        groups = self.optimizer.param_groups
        for group, base, factor in zip(groups, self.base_lrs, self.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in groups]
        self._set_weight_decay()


def build_scheduler(
    optimizer: Optimizer,
    total_steps: int,
    warmup_steps: int,
    final_lr_ratio: float = 0.0,
    warmup_start_ratio: float = 0.0,
    final_wd_ratio: float | None = None,
    warmup_ends_at_peak: bool = False,
) -> WarmupCosine:
    """:class:`WarmupCosine` for ``optimizer``: step it once per iteration.

    Its ``state_dict`` round-trips, so a resumed run continues the schedule.

    Args:
        optimizer: The optimiser whose groups' lr (and weight decay) are scheduled.
        total_steps: The run's iterations.
        warmup_steps: The warm-up's iterations.
        final_lr_ratio: The lr at the end of the run, as a ratio of the peak.
        warmup_start_ratio: The lr at step 0, as a ratio of the peak.
        final_wd_ratio: The weight decay at the end of the run as a ratio of the initial one; ``None``
            keeps it constant.
        warmup_ends_at_peak: Whether the last warm-up step already runs at the peak lr.

    Returns:
        The scheduler.

    Raises:
        ConfigError: If an argument is out of its range (see :class:`WarmupCosine`).
    """
    return WarmupCosine(
        optimizer,
        total_steps,
        warmup_steps,
        final_lr_ratio,
        warmup_start_ratio,
        final_wd_ratio,
        warmup_ends_at_peak,
    )
