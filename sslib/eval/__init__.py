"""Evaluation primitives: frozen-feature extraction and the weighted kNN classifier."""

from sslib.eval.features import extract_features
from sslib.eval.knn import knn_accuracy, knn_predict

__all__ = ["extract_features", "knn_accuracy", "knn_predict"]
