"""Per-step schedules of hyper-parameters (EMA momentum, labeler attributes such as MIRA's beta)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from sslib.optim import cosine_ramp
from sslib.validation import check_choice, check_int_at_least

KINDS = ("cosine", "linear")


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Ramp:
    """``start`` -> ``end`` over ``epochs`` (whole run when None), by a cosine or linear ramp, then constant.

    DINO's teacher-temperature warm-up is ``Ramp(0.04, 0.07, "linear", epochs=30)``. DINO itself steps it
    once per epoch and reaches ``end`` at epoch N - 1 (``np.linspace`` over N epochs, ``main_dino.py``
    lines 374-378); this ramp moves every step and reaches ``end`` when epoch N starts.
    """

    start: float
    end: float
    kind: str = "cosine"
    epochs: float | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            if not _finite_number(getattr(self, name)):
                raise ValueError(f"schedule {name} must be a finite number, got {getattr(self, name)!r}")
        check_choice("schedule kind", self.kind, KINDS)
        if self.epochs is not None and not (_finite_number(self.epochs) and self.epochs > 0):
            raise ValueError(
                f"schedule epochs must be a finite number > 0 or null (whole run), got {self.epochs!r}"
            )

    def value(self, step: int, total_steps: int, steps_per_epoch: float) -> float:
        """The value at iteration ``step`` of ``total_steps``.

        With span S = ``total_steps`` (or ``max(1, round(epochs * steps_per_epoch))``) and t = min(step, S):
        cosine ``end - (end - start) (1 + cos(pi t / S)) / 2``, linear ``start + (end - start) t / S``.
        """
        check_int_at_least("total_steps", total_steps, 1)
        span = total_steps if self.epochs is None else max(1, round(self.epochs * steps_per_epoch))
        step = min(step, span)
        if self.kind == "cosine":
            return cosine_ramp(step, span, self.start, self.end)
        return self.start + (self.end - self.start) * step / span


FIELDS = tuple(f.name for f in fields(Ramp))


def ramps(spec: Mapping | None) -> dict[str, Ramp]:
    """``{attribute: Ramp}`` from a config mapping ``{attribute: {start, end, kind, epochs}}``.

    A bad entry is a one-line ``ValueError`` naming the attribute, e.g. ``schedule of 'beta': ...``.
    """
    out = {}
    for name, cfg in (spec or {}).items():
        cfg = dict(cfg)
        unknown = sorted(set(cfg) - set(FIELDS))
        missing = [key for key in ("start", "end") if key not in cfg]
        try:
            if unknown or missing:
                raise ValueError(
                    f"unknown key(s) {', '.join(unknown) or '-'}, missing {', '.join(missing) or '-'}; "
                    f"allowed: {', '.join(FIELDS)} (start and end required)"
                )
            out[name] = Ramp(**cfg)
        except ValueError as err:
            raise ValueError(f"schedule of {name!r}: {err}") from None
    return out
