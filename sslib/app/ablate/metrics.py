"""Read what a run logged: ``run_dir/logs/version_N/metrics.csv`` of the CSV logger, one file per launch."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

KNN_KEY = "val/knn_top1"
CLUSTERS_KEY = "labels/clusters_used"
N_CLUSTERS_KEY = "labels/n_clusters"


def metric_files(run_dir: Path) -> list[Path]:
    """The run's metrics files, oldest launch first (a resumed run adds a version)."""
    files = Path(run_dir).glob("logs/version_*/metrics.csv")
    return sorted(files, key=lambda f: int(f.parent.name.removeprefix("version_")))


def _rows(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as f:
        yield from csv.DictReader(f)


def knn_curve(run_dir: Path) -> list[tuple[int, float]]:
    """Online kNN top-1 as ``(epochs trained, accuracy)``, sorted; epoch 0 is the random-init baseline.

    Each launch logs one ``val/knn_top1`` row per finished epoch, and a fresh launch with ``baseline_eval``
    one more, first, for the untrained backbone: so a launch with more rows than distinct epochs starts with
    the baseline. A later launch's value for an epoch replaces an earlier one (a resumed, repeated epoch).
    """
    points: dict[int, float] = {}
    for path in metric_files(run_dir):
        logged = [(int(r["epoch"]), float(r[KNN_KEY])) for r in _rows(path) if r.get(KNN_KEY)]
        if len(logged) > len({epoch for epoch, _ in logged}):
            points[0] = logged.pop(0)[1]
        points.update({epoch + 1: value for epoch, value in logged})
    return sorted(points.items())


def last_clusters_used(run_dir: Path) -> tuple[int, int] | None:
    """``(clusters used, clusters)`` of the last logged training batch, or ``None`` when never logged."""
    last = None
    for path in metric_files(run_dir):
        for row in _rows(path):
            if row.get(CLUSTERS_KEY):
                last = (round(float(row[CLUSTERS_KEY])), round(float(row[N_CLUSTERS_KEY])))
    return last
