"""The ablation's plot: online kNN top-1 against epochs for every run."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_knn_curves(curves: dict[str, list[tuple[int, float]]], path: Path, title: str = "") -> Path:
    """Save ``{run name: [(epochs trained, top-1), ...]}`` as one line per run in a PNG at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6, 4), dpi=150)  # no pyplot: works headless, with the Agg canvas
    ax = figure.add_subplot()
    for name, points in curves.items():
        if points:
            epochs, accuracy = zip(*points, strict=True)
            ax.plot(epochs, accuracy, marker="o", markersize=3, label=name)
    ax.set(title=title, xlabel="epochs trained (0: random init)", ylabel="kNN top-1 (%)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if any(curves.values()):
        ax.legend(loc="best", fontsize="small")
    figure.savefig(path, format="png", bbox_inches="tight")
    return path
