"""One-line argument checks shared by all components."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sslib.errors import ConfigError


def check_positive(name: str, value: float) -> float:
    """``value > 0`` and finite, else ``ValueError`` naming it."""
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: float, *, closed_right: bool = False) -> float:
    """``value`` in [0, 1) (or [0, 1] with ``closed_right``), else ``ValueError`` naming it."""
    ok = isinstance(value, (int, float)) and value >= 0 and (value <= 1 if closed_right else value < 1)
    if not ok:
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ConfigError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def check_int_at_least(name: str, value: int, minimum: int) -> int:
    """``value`` an integer >= ``minimum``, else ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """``value`` ``True`` or ``False`` (not 0, 1 or a string), else ``ConfigError`` naming it."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` one of ``choices``, else ``ValueError`` naming it and the allowed values."""
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


class Checked:
    """A validated attribute: every assignment goes through ``check(name, value)``.

    Used for hyper-parameters that schedules change during training, e.g.
    ``beta = Checked(check_unit_interval)`` makes ``labeler.beta = 1.2`` a one-line ``ConfigError``.
    """

    def __init__(self, check: Callable[[str, Any], Any]) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__[self.name]

    def __set__(self, obj: object, value: Any) -> None:
        obj.__dict__[self.name] = self.check(self.name, value)
