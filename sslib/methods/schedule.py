"""Per-step schedules of hyper-parameters (EMA momentum, labeler attributes such as MIRA's beta)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sslib.optim import cosine_ramp

KINDS = ("cosine", "linear")


@dataclass(frozen=True)
class Ramp:
    """``start`` -> ``end`` over ``epochs`` (whole run when None), by a cosine or linear ramp, then constant."""

    start: float
    end: float
    kind: str = "cosine"
    epochs: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"schedule kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"schedule epochs must be > 0 or null, got {self.epochs!r}")

    def value(self, step: int, total_steps: int, steps_per_epoch: float) -> float:
        span = total_steps if self.epochs is None else max(1, round(self.epochs * steps_per_epoch))
        step = min(step, span)
        if self.kind == "cosine":
            return cosine_ramp(step, span, self.start, self.end)
        return self.start + (self.end - self.start) * step / span


def ramps(spec: Mapping | None) -> dict[str, Ramp]:
    """``{attribute: Ramp}`` from a config mapping ``{attribute: {start, end, kind, epochs}}``."""
    return {name: Ramp(**dict(cfg)) for name, cfg in (spec or {}).items()}
