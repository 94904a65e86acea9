"""Deprecated: the losses are :mod:`sslib.losses` (this path is removed in 0.3)."""

import warnings

from sslib.losses import cluster_prediction_loss, swapped_prediction_loss

warnings.warn(
    "sslib.methods.losses moved to sslib.losses; the old path is removed in 0.3",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["cluster_prediction_loss", "swapped_prediction_loss"]
