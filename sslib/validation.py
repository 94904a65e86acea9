"""One-line argument checks shared by all components."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from sslib.errors import ConfigError


def check_positive(name: str, value: float) -> float:
    """Check that ``value`` is a finite number > 0.

    Args:
        name: The value's name, for the message.
        value: The value to check.

    Returns:
        ``value`` as a float.

    Raises:
        ConfigError: If ``value`` is not a finite number > 0 (a ``ValueError``).
    """
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def check_unit_interval(name: str, value: float, *, closed_right: bool = False) -> float:
    """Check that ``value`` is in [0, 1) (or [0, 1] with ``closed_right``).

    Args:
        name: The value's name, for the message.
        value: The value to check.
        closed_right: Whether 1 is allowed.

    Returns:
        ``value`` as a float.

    Raises:
        ConfigError: If ``value`` is not a number in the interval (a ``ValueError``).
    """
    ok = isinstance(value, (int, float)) and value >= 0 and (value <= 1 if closed_right else value < 1)
    if not ok:
        interval = "[0, 1]" if closed_right else "[0, 1)"
        raise ConfigError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def check_int_at_least(name: str, value: int, minimum: int) -> int:
    """Check that ``value`` is an integer (not a bool) >= ``minimum``.

    Args:
        name: The value's name, for the message.
        value: The value to check.
        minimum: The smallest value allowed.

    Returns:
        ``value``.

    Raises:
        ConfigError: If ``value`` is not an integer >= ``minimum`` (a ``ValueError``).
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Check that ``value`` is ``True`` or ``False`` (not 0, 1 or a string).

    Args:
        name: The value's name, for the message.
        value: The value to check.

    Returns:
        ``value``.

    Raises:
        ConfigError: If ``value`` is not a bool.
    """
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Check that ``value`` is one of ``choices``.

    Args:
        name: The value's name, for the message.
        value: The value to check.
        choices: The allowed values, listed in the message.

    Returns:
        ``value``.

    Raises:
        ConfigError: If ``value`` is not one of ``choices`` (a ``ValueError``).
    """
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


class Checked:
    """A validated attribute: every assignment goes through ``check(name, value)``.

    Used for hyper-parameters that schedules change during training, e.g.
    ``beta = Checked(check_unit_interval)`` makes ``labeler.beta = 1.2`` a one-line ``ConfigError``.

    Args:
        check: Called as ``check(attribute name, value)``; returns the value to store or raises.
    """

    def __init__(self, check: Callable[[str, Any], Any]) -> None:
        self.check = check

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        return self if obj is None else obj.__dict__[self.name]

    def __set__(self, obj: object, value: Any) -> None:
        obj.__dict__[self.name] = self.check(self.name, value)
