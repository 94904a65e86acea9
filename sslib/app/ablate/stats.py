"""Statistics over seeds: mean, standard deviation, n and a Student-t confidence interval of the mean, also of
the differences between two rows paired by seed (the same seed gives every method the same data order and
crops, so their difference varies less than either). The t quantile is scipy's."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95  # the confidence level of every interval in the report


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
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 1)) * sd / math.sqrt(n)
    return Summary(mean, sd, n, mean - half, mean + half)


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float]) -> Summary | None:
    """The :class:`Summary` of ``values[s] - reference[s]`` over the seeds ``s`` both have."""
    return summarize([values[s] - reference[s] for s in sorted(values) if s in reference])
