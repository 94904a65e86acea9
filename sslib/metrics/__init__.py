"""Metrics of representations for any training loop: frozen-feature extraction, the weighted kNN
classifier (``knn``), the online probe and kNN monitor of a run (``online``), and the label-free monitors
RankMe, alignment and uniformity (``monitors``). The offline tools built on them are in
:mod:`sslib.app.eval`."""

from sslib.metrics.features import extract_features
from sslib.metrics.knn import knn_accuracy, knn_predict, topk_accuracy

__all__ = ["extract_features", "knn_accuracy", "knn_predict", "topk_accuracy"]
