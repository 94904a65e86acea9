"""The ablation's table: Markdown (to read or paste into docs) and CSV (to process)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from sslib.app.ablate.plan import EvalSettings
from sslib.app.markdown import markdown_table
from sslib.io import atomic_write_text

NONE = "—"  # a method without labeler: no labeler, no clusters
HEADER = ["method", "labeler", "epochs", "wall time", "kNN top-1", "linear top-1", "clusters used"]


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


def format_duration(seconds: float | None) -> str:
    """``373.2`` -> ``"6m13s"``; ``None`` (not recorded) -> ``"—"``."""
    if seconds is None:
        return NONE
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _row(result: Result) -> list[str]:
    clusters = NONE if result.clusters_used is None else f"{result.clusters_used} / {result.n_clusters}"
    return [
        result.method,
        result.labeler or NONE,
        str(result.epochs),
        format_duration(result.wall_time_s),
        f"{result.knn_top1:.2f}",
        f"{result.linear_top1:.2f}",
        clusters,
    ]


def markdown(results: Sequence[Result], settings: EvalSettings) -> str:
    """The table, and a line saying how the accuracies were measured."""
    note = (
        f"Top-1 (%) on the val split, frozen backbone: weighted kNN (k = {settings.knn_k}, "
        f"T = {settings.knn_temperature:g}, cosine, 100% of the train labels) and a linear probe "
        f"({settings.linear_epochs} epochs on center-crop features). random-init: the untrained backbone of "
        "the same budget, evaluated the same way. Clusters used: distinct argmax clusters of the last logged "
        "training batch, of K."
    )
    return markdown_table(HEADER, [_row(r) for r in results]) + "\n\n" + note


def write_csv(results: Sequence[Result], path: Path) -> None:
    """One row per run, the :class:`Result` fields as columns (empty: not applicable)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[f.name for f in fields(Result)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(r) for r in results)
    atomic_write_text(path, buffer.getvalue())
