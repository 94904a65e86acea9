"""Evaluation primitives: frozen-feature extraction and the weighted kNN classifier.

The offline tools (cached checkpoint features, kNN on label fractions, linear probe) are in
``sslib.eval.offline``, labelled subsets (SimCLR's ImageNet lists) in ``sslib.eval.subsets``,
semi-supervised fine-tuning in ``sslib.eval.finetune``, transfer logistic regression and its metrics in
``sslib.eval.transfer`` / ``transfer_data``, the per-checkpoint report in ``sslib.eval.report``, RankMe
and alignment/uniformity in ``sslib.eval.monitors`` and the UMAP plot in ``sslib.eval.embedding``; they
are not imported here, as they load checkpoints through ``sslib.methods``, which itself imports this
package.
"""

from sslib.eval.features import extract_features
from sslib.eval.knn import knn_accuracy, knn_predict, topk_accuracy

__all__ = ["extract_features", "knn_accuracy", "knn_predict", "topk_accuracy"]
