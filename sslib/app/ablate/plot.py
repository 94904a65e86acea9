"""The ablation's plot: online kNN top-1 against epochs, one line per row (the mean over its seeds, with a
band of the 95% interval of that mean when it has several)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sslib.app.ablate.stats import summarize

Curve = list[tuple[int, float]]  # (epochs trained, top-1), sorted


def mean_curve(curves: Sequence[Curve]) -> list[tuple[int, float, float | None, float | None]]:
    """``(epoch, mean, low, high)`` at each epoch that every curve has: the mean over the curves and its
    95% Student-t interval (``None`` for one curve)."""
    points = [dict(curve) for curve in curves]
    epochs = sorted(set.intersection(*(set(p) for p in points))) if points else []
    out = []
    for epoch in epochs:
        summary = summarize([p[epoch] for p in points])
        assert summary is not None
        out.append((epoch, summary.mean, summary.low, summary.high))
    return out


def plot_knn_curves(curves: dict[str, list[Curve]], path: Path, title: str = "") -> Path:
    """Save ``{row: [curve of each finished seed, ...]}`` as one line per row (the mean over seeds) with its
    interval as a band, in a PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6, 4), dpi=150)  # no pyplot: works headless, with the Agg canvas
    ax = figure.add_subplot()
    drawn = False
    for name, runs in curves.items():
        points = mean_curve([curve for curve in runs if curve])
        if not points:
            continue
        epochs, mean, low, high = zip(*points, strict=True)
        label = name if len(runs) == 1 else f"{name} (n={len(runs)})"
        (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=label)
        if len(runs) > 1:
            ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn = True
    ax.set(title=title, xlabel="epochs trained (0: random init)", ylabel="kNN top-1 (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="best", fontsize="small")
    figure.savefig(path, format="png", bbox_inches="tight")
    return path
