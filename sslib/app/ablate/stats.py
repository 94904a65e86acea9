"""Statistics over seeds: mean, standard deviation, n and a Student-t confidence interval of the mean, also of
the differences between two rows paired by seed (the same seed gives every method the same data order and
crops, so their difference varies less than either). Pure Python: the t quantile is computed here."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LEVEL = 0.95  # the confidence level of every interval in the report
_TINY = 1e-300


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""

    def guard(value: float) -> float:
        return _TINY if abs(value) < _TINY else value

    c, d = 1.0, 1.0 / guard(1.0 - (a + b) * x / (a + 1.0))
    fraction = d
    for m in range(1, 1000):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 / guard(1.0 + numerator * d)
            c = guard(1.0 + numerator / c)
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return fraction


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``a, b > 0`` and ``0 <= x <= 1``."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """``P(T <= t)`` for Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: int) -> float:
    """The ``t`` with ``P(T <= t) = p`` (``0.5 <= p < 1``), by bisection of :func:`t_cdf`."""
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and the :data:`LEVEL` Student-t interval of the mean of ``n``
    values; ``sd``, ``low`` and ``high`` are ``None`` for fewer than two values."""

    mean: float
    sd: float | None
    n: int
    low: float | None
    high: float | None


def summarize(values: Sequence[float]) -> Summary | None:
    """The :class:`Summary` of ``values`` (``None`` when there are none)."""
    n = len(values)
    if not n:
        return None
    mean = math.fsum(values) / n
    if n < 2:
        return Summary(mean, None, 1, None, None)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + LEVEL / 2, n - 1) * sd / math.sqrt(n)
    return Summary(mean, sd, n, mean - half, mean + half)


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float]) -> Summary | None:
    """The :class:`Summary` of ``values[s] - reference[s]`` over the seeds ``s`` both have."""
    return summarize([values[s] - reference[s] for s in sorted(values) if s in reference])
