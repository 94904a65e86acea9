"""Deprecated: the EMA teacher is :mod:`sslib.modules.ema` (this path is removed in 0.3)."""

import warnings

from sslib.modules.ema import ema_update, make_teacher

warnings.warn(
    "sslib.methods.ema moved to sslib.modules.ema; the old path is removed in 0.3",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ema_update", "make_teacher"]
