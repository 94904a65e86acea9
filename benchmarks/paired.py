"""Paired timing and PASS/FAIL verdicts shared by the benchmarks in this folder.

A verdict compares a candidate with a baseline timed in the same run. Every round times each case once,
back to back, in an order rotated by one case per round; the ratio of two cases is taken per round and
its median over rounds, ``median_r(num_r / den_r)``, is compared with the target. A slow drift of a
shared machine's speed then scales both times of a round and cancels, where a ratio of medians would
compare rounds run at different speeds. Each benchmark prints its verdicts last and exits with status 1
when one fails (``--no-fail``: status 0, for exploring settings).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


def no_sync() -> None:
    """Nothing to wait for (CPU work is done when the call returns)."""


def seconds(fn: Callable[[], object], sync: Callable[[], None] = no_sync) -> float:
    """Wall time of one call of ``fn``, ``sync`` waiting for its asynchronous work (e.g. CUDA kernels)."""
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def run_rounds(measures: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """``{case: [value of round 1, ..., value of round n]}``: each round calls every measure once, back to
    back, round ``r`` starting with case ``r mod n_cases``. A measure returns what it timed (seconds)."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(measures)
    values: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            values[name].append(measures[name]())
    return values


def paired_ratio(num: Sequence[float], den: Sequence[float]) -> float:
    """``median_r(num[r] / den[r])`` of two cases measured in the same rounds."""
    if len(num) != len(den) or not num:
        raise ValueError(
            f"paired_ratio needs two equal, non-empty series, got {len(num)} and {len(den)} rounds"
        )
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def median(values: Sequence[float]) -> float:
    """The median of one case's rounds (the tables' time columns)."""
    return statistics.median(values)


@dataclass(frozen=True)
class Verdict:
    """``subject`` scored ``value`` (a paired ratio) ``relation``; it passes when ``value <= at_most`` or
    ``value >= at_least`` (exactly one bound is given). ``note`` adds context to the printed line."""

    subject: str
    value: float
    relation: str
    at_most: float | None = None
    at_least: float | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if (self.at_most is None) == (self.at_least is None):
            raise ValueError(f"verdict '{self.subject}' needs exactly one of at_most, at_least")

    @property
    def passed(self) -> bool:
        return self.value <= self.at_most if self.at_most is not None else self.value >= self.at_least

    def __str__(self) -> str:
        target = f"<= {self.at_most:g}x" if self.at_most is not None else f">= {self.at_least:g}x"
        note = f"; {self.note}" if self.note else ""
        return f"{'PASS' if self.passed else 'FAIL'} {self.subject} {self.value:.3f}x {self.relation} (target {target}{note})"


def add_verdict_arguments(parser: argparse.ArgumentParser) -> None:
    """``--no-fail``: report FAIL verdicts but exit with status 0."""
    parser.add_argument(
        "--no-fail", action="store_true", help="exit with status 0 even when a verdict is FAIL (exploration)"
    )


def report(verdicts: Sequence[Verdict], no_fail: bool = False) -> int:
    """Print one line per verdict; the exit status: 1 if one failed (0 with ``no_fail``), else 0."""
    print()
    for verdict in verdicts:
        print(verdict, flush=True)
    failed = sum(not v.passed for v in verdicts)
    if failed:
        print(
            f"{failed} of {len(verdicts)} verdicts FAIL" + (" (--no-fail: exit status 0)" if no_fail else "")
        )
    return 1 if failed and not no_fail else 0
