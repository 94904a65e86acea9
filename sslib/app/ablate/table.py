"""The ablation's table: Markdown (to read or paste into docs) and CSV (one line per run, to process).

With several seeds a row gives, per metric, the mean ± standard deviation, the number of seeds and a 95%
Student-t interval of the mean; with a reference row, a second table gives each row's difference to it,
paired by seed, with its interval. Rows or seeds that have not finished are marked ``missing``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sslib.app.ablate.plan import EvalSettings
from sslib.app.ablate.stats import LEVEL, Summary, paired_difference, summarize
from sslib.app.markdown import markdown_table
from sslib.io import atomic_write_text

NONE = "—"  # a method without labeler: no labeler, no clusters; an interval of one seed
MISSING = "missing"  # a row without a finished run
METRICS = {"kNN": "knn_top1", "linear": "linear_top1"}


@dataclass(frozen=True)
class Result:
    """One run's row: accuracies in percent, wall time in seconds; ``None``: not applicable or not recorded."""

    method: str
    labeler: str | None
    epochs: int
    wall_time_s: float | None
    knn_top1: float
    linear_top1: float
    clusters_used: int | None
    n_clusters: int | None


@dataclass(frozen=True)
class Row:
    """A row of the table: its method and labeler, the results of its finished runs by seed, and how many
    seeds it has in all."""

    method: str
    labeler: str | None
    results: dict[int, Result]
    seeds: int

    @property
    def name(self) -> str:
        return "-".join(part for part in (self.method, self.labeler) if part)

    def metric(self, key: str) -> dict[int, float]:
        return {seed: getattr(result, key) for seed, result in self.results.items()}


def format_duration(seconds: float | None) -> str:
    """``373.2`` -> ``"6m13s"``; ``None`` (not recorded) -> ``"—"``."""
    if seconds is None:
        return NONE
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _mean(values: Sequence[float | None], show: Callable[[float], str]) -> str:
    known = [v for v in values if v is not None]
    return show(math.fsum(known) / len(known)) if known else NONE


def _value(summary: Summary, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{summary.mean:{sign}.2f}" + ("" if summary.sd is None else f" ± {summary.sd:.2f}")


def _interval(summary: Summary, signed: bool = False) -> str:
    if summary.low is None or summary.high is None:
        return NONE
    sign = "+" if signed else ""
    return f"[{summary.low:{sign}.2f}, {summary.high:{sign}.2f}]"


def _row(row: Row, replicated: bool) -> list[str]:
    results = list(row.results.values())
    seeds = [f"{len(results)}" if len(results) == row.seeds else f"{len(results)} of {row.seeds}"]
    if not results:
        width = 5 + 2 * replicated
        return [row.method, row.labeler or NONE, *(seeds if replicated else []), *[MISSING] * width]
    epochs = sorted({r.epochs for r in results})
    cells = [str(epochs[0]) if len(epochs) == 1 else f"{epochs[0]}-{epochs[-1]}"]
    cells.append(_mean([r.wall_time_s for r in results], format_duration))
    for key in METRICS.values():
        summary = summarize(list(row.metric(key).values()))
        assert summary is not None
        cells += [_value(summary), _interval(summary)] if replicated else [f"{summary.mean:.2f}"]
    used = _mean([r.clusters_used for r in results], lambda m: f"{round(m)} / {results[0].n_clusters}")
    return [row.method, row.labeler or NONE, *(seeds if replicated else []), *cells, used]


def _differences(rows: Sequence[Row], reference: Row) -> str:
    """Each row's difference to ``reference``, paired by seed, as a Markdown table."""
    header = ["method", "labeler", "seeds"]
    for name in METRICS:
        header += [f"Δ {name} top-1", f"Δ {name} {LEVEL:.0%} CI"]
    table = []
    for row in rows:
        if row is reference:
            continue
        cells = [row.method, row.labeler or NONE]
        pairs = [paired_difference(row.metric(key), reference.metric(key)) for key in METRICS.values()]
        if pairs[0] is None:
            table.append([*cells, "0", *[MISSING] * (2 * len(METRICS))])
            continue
        table.append([*cells, str(pairs[0].n)])
        for pair in pairs:
            assert pair is not None
            table[-1] += [_value(pair, signed=True), _interval(pair, signed=True)]
    return markdown_table(header, table)


def markdown(
    rows: Sequence[Row], settings: EvalSettings, replicated: bool = False, reference: str | None = None
) -> str:
    """The table (with ``replicated``: the seeds, standard deviations and intervals), the differences to
    the row named ``reference`` if any, and the lines that say how the numbers were measured."""
    header = ["method", "labeler", *(["seeds"] if replicated else []), "epochs", "wall time"]
    for name in METRICS:
        header += [f"{name} top-1", f"{name} {LEVEL:.0%} CI"] if replicated else [f"{name} top-1"]
    table = markdown_table([*header, "clusters used"], [_row(row, replicated) for row in rows])
    notes = [
        f"Top-1 (%) on the val split, frozen backbone: weighted kNN (k = {settings.knn_k}, "
        f"T = {settings.knn_temperature:g}, cosine, 100% of the train labels) and a linear probe "
        f"({settings.linear_epochs} epochs on center-crop features). random-init: the untrained backbone of "
        "the same budget, evaluated the same way. Clusters used: distinct argmax clusters of the last logged "
        "training batch, of K."
    ]
    if replicated:
        notes.append(
            f"Over seeds: mean ± standard deviation, and the {LEVEL:.0%} Student-t interval of the mean "
            "(n - 1 degrees of freedom; — for one seed). Wall time and clusters used: means."
        )
    if reference is not None:
        [ref] = [row for row in rows if row.name == reference]
        table += f"\n\nDifference to {reference} (row minus {reference}, paired by seed):\n\n"
        table += _differences(rows, ref)
        notes.append(
            f"Differences: for each seed both rows finished, the row's top-1 minus {reference}'s (the same "
            "seed gives both the same data order and crops), then the mean ± standard deviation of those "
            f"differences and their {LEVEL:.0%} Student-t interval."
        )
    return table + "\n\n" + "\n\n".join(notes)


def write_csv(results: Sequence[tuple[int, Result]], path: Path) -> None:
    """One line per finished run, its seed and :class:`Result` fields as columns (empty: not applicable)."""
    names = [f.name for f in fields(Result)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*names[:2], "seed", *names[2:]], lineterminator="\n")
    writer.writeheader()
    writer.writerows({"seed": seed, **asdict(result)} for seed, result in results)
    atomic_write_text(path, buffer.getvalue())
