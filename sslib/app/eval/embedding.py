"""2-D UMAP embedding of frozen features, plotted as a PNG coloured by class (needs ``sslib-vision[umap]``)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from sslib.validation import check_int_at_least, check_unit_interval

LEGEND_MAX_CLASSES = 20  # more classes get colours but no legend


def import_umap() -> ModuleType:
    """The ``umap`` module of umap-learn; when it is missing, a one-line ``ImportError`` saying how to get it."""
    try:
        return importlib.import_module("umap")
    except ImportError:
        raise ImportError("UMAP needs umap-learn: pip install 'sslib-vision[umap]'") from None


def check_umap_settings(n_neighbors: int, min_dist: float) -> None:
    """UMAP's own bounds (``n_neighbors >= 2``, ``0 <= min_dist <= spread = 1``) as one-line ``ConfigError``s."""
    check_int_at_least("--n-neighbors", n_neighbors, 2)
    check_unit_interval("--min-dist", min_dist, closed_right=True)


def umap_embedding(
    features: Tensor, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0
) -> np.ndarray:
    """``(N, 2)`` UMAP embedding of ``features`` ``(N, D)`` with cosine distances (``seed`` fixes it)."""
    umap = import_umap()
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed)
    return reducer.fit_transform(features.float().numpy())


def embedding_figure(
    points: np.ndarray, labels: Tensor, title: str = "", class_names: Sequence[str] | None = None
) -> Figure:
    """A scatter plot of ``points`` ``(N, 2)`` coloured by class ``labels`` ``(N,)``; up to 20 classes get
    a legend naming each present class by ``class_names[label]`` (default: the label itself)."""
    figure = Figure(figsize=(6, 6), dpi=150)  # no pyplot: works headless, with the Agg canvas
    ax = figure.add_subplot()
    present = labels.unique().tolist()
    cmap = "tab10" if len(present) <= 10 else "turbo"
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels.numpy(), cmap=cmap, s=4, linewidths=0)
    if len(present) <= LEGEND_MAX_CLASSES:
        handles, _ = scatter.legend_elements(num=present)  # one handle per present label, in order
        names = [class_names[i] if class_names else str(i) for i in present]
        ax.legend(handles, names, title="class", loc="best", fontsize="small", markerscale=0.8)
    ax.set(title=title, xticks=[], yticks=[])
    return figure


def plot_embedding(
    points: np.ndarray,
    labels: Tensor,
    path: str | Path,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> Path:
    """Save :func:`embedding_figure` as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    embedding_figure(points, labels, title, class_names).savefig(path, format="png", bbox_inches="tight")
    return path
