"""2-D UMAP embedding of frozen features, plotted as a PNG coloured by class (needs ``sslib-vision[umap]``)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor


def import_umap() -> ModuleType:
    """The ``umap`` module of umap-learn; when it is missing, a one-line ``ImportError`` saying how to get it."""
    try:
        return importlib.import_module("umap")
    except ImportError:
        raise ImportError("UMAP needs umap-learn: pip install 'sslib-vision[umap]'") from None


def umap_embedding(
    features: Tensor, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0
) -> np.ndarray:
    """``(N, 2)`` UMAP embedding of ``features`` ``(N, D)`` with cosine distances (``seed`` fixes it)."""
    umap = import_umap()
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed)
    return reducer.fit_transform(features.float().numpy())


def plot_embedding(points: np.ndarray, labels: Tensor, path: str | Path, title: str = "") -> Path:
    """Save a scatter plot of ``points`` ``(N, 2)`` coloured by class ``labels`` ``(N,)`` as a PNG at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure = Figure(figsize=(6, 6), dpi=150)  # no pyplot: works headless, with the Agg canvas
    ax = figure.add_subplot()
    n_classes = len(labels.unique())
    cmap = "tab10" if n_classes <= 10 else "turbo"
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels.numpy(), cmap=cmap, s=4, linewidths=0)
    if n_classes <= 20:
        ax.legend(*scatter.legend_elements(), title="class", loc="best", fontsize="small", markerscale=0.8)
    ax.set(title=title, xticks=[], yticks=[])
    figure.savefig(path, format="png", bbox_inches="tight")
    return path
