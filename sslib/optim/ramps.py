"""Per-step schedules of hyper-parameters (EMA momentum, labeler attributes such as MIRA's beta)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from sslib.errors import ConfigError
from sslib.optim import cosine_ramp
from sslib.validation import check_choice, check_int_at_least

KINDS = ("cosine", "linear")
UNITS = ("step", "epoch")


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Ramp:
    """``start`` -> ``end`` over ``epochs`` (whole run when None), by a cosine or linear ramp, then constant.

    ``unit="step"`` moves the value every iteration and reaches ``end`` when epoch N = ``epochs`` starts.
    ``unit="epoch"`` holds it for each epoch and reaches ``end`` at epoch N - 1, as ``np.linspace(start,
    end, N)[epoch]``: DINO's teacher-temperature warm-up, ``Ramp(0.04, 0.07, "linear", 30, "epoch")``
    (facebookresearch/dino@7c446df main_dino.py L374-378, read at L268 with the epoch's index).

    Args:
        start: The first value, a finite number.
        end: The last value, a finite number.
        kind: ``"cosine"`` or ``"linear"``.
        epochs: N, the ramp's length in epochs (> 0); ``None`` is the whole run.
        unit: ``"step"`` or ``"epoch"``, as above.

    Raises:
        ConfigError: If a value is not a finite number, ``kind`` or ``unit`` is unknown, or ``epochs`` is
            not > 0.
    """

    start: float
    end: float
    kind: str = "cosine"
    epochs: float | None = None
    unit: str = "step"

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            if not _finite_number(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)!r}")
        check_choice("kind", self.kind, KINDS)
        check_choice("unit", self.unit, UNITS)
        if self.epochs is not None and not (_finite_number(self.epochs) and self.epochs > 0):
            raise ConfigError(f"epochs must be a finite number > 0 or null (whole run), got {self.epochs!r}")

    def value(self, step: int, total_steps: int, steps_per_epoch: float, epoch: int | None = None) -> float:
        """The value at iteration ``step`` of ``total_steps``.

        ``unit="step"``: span S = ``total_steps`` (or ``max(1, round(epochs * steps_per_epoch))``) and
        t = min(step, S); ``unit="epoch"``: S = N - 1 for N = ``epochs`` (or the run's epochs) and
        t = min(epoch, S), the value ``end`` when N = 1. Then cosine ``end - (end - start) (1 + cos(pi t / S))
        / 2``, linear ``start + (end - start) t / S``.

        Args:
            step: The iteration, from 0.
            total_steps: The run's iterations, >= 1.
            steps_per_epoch: Iterations per epoch.
            epoch: The epoch of ``step``; ``None`` is ``step // steps_per_epoch``.

        Returns:
            The value.

        Raises:
            ConfigError: If ``total_steps`` < 1.
        """
        check_int_at_least("total_steps", total_steps, 1)
        if self.unit == "epoch":
            n_epochs = round(total_steps / steps_per_epoch if self.epochs is None else self.epochs)
            if n_epochs <= 1:
                return self.end
            span = n_epochs - 1
            step = min(int(step // steps_per_epoch) if epoch is None else epoch, span)
        else:
            span = total_steps if self.epochs is None else max(1, round(self.epochs * steps_per_epoch))
            step = min(step, span)
        if self.kind == "cosine":
            return cosine_ramp(step, span, self.start, self.end)
        return self.start + (self.end - self.start) * step / span


FIELDS = tuple(f.name for f in fields(Ramp))


def ramps(spec: Mapping | None) -> dict[str, Ramp]:
    """``{attribute: Ramp}`` from a config mapping ``{attribute: {start, end, kind, epochs, unit}}``.

    Args:
        spec: ``{attribute: {start, end, kind, epochs, unit}}``, ``start`` and ``end`` required; ``None``
            is no ramp.

    Returns:
        ``{attribute: Ramp}``.

    Raises:
        ConfigError: On a bad entry, in one line that starts with the attribute, e.g. ``beta.start must
            be a finite number, got 'x'`` or ``beta has unknown key(s) ...``.
    """
    out = {}
    for name, cfg in (spec or {}).items():
        cfg = dict(cfg)
        unknown = sorted(set(cfg) - set(FIELDS))
        missing = [key for key in ("start", "end") if key not in cfg]
        if unknown or missing:
            raise ConfigError(
                f"{name} has unknown key(s) {', '.join(unknown) or '-'}, missing {', '.join(missing) or '-'}; "
                f"allowed: {', '.join(FIELDS)} (start and end required)"
            )
        try:
            out[name] = Ramp(**cfg)
        except ValueError as err:
            raise ConfigError(f"{name}.{err}") from None
    return out
