"""Offline evaluation of trained checkpoints: cached features, kNN on label fractions, linear probe,
fine-tuning, transfer, UMAP and one report per checkpoint. The primitives they use (feature extraction,
the weighted kNN classifier, representation monitors) are in :mod:`sslib.metrics`."""
