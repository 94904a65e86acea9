"""Frozen-backbone feature extraction for kNN / linear evaluation."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from sslib.errors import ConfigError


def extract_features(
    backbone: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Run ``backbone`` over ``loader``'s ``(images, labels)`` batches under ``torch.inference_mode()``.

    The backbone is moved to ``device``, put in eval mode, and its previous train/eval mode is restored
    afterwards.

    Args:
        backbone: The frozen backbone; it must return a ``(B, D)`` tensor per batch.
        loader: Yields ``(images, labels)`` batches.
        device: Where the backbone runs; ``None`` is CUDA when available, else CPU.

    Returns:
        ``(features, labels)``: features ``(N, D)`` float32 and labels ``(N,)``, both on CPU.

    Raises:
        ConfigError: If the backbone returns anything but a 2-D tensor, or ``loader`` yields no batch.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    was_training = backbone.training
    backbone.to(device).eval()
    features, labels = [], []
    try:
        with torch.inference_mode():
            for images, targets in loader:
                out = backbone(images.to(device, non_blocking=True))
                if not isinstance(out, Tensor) or out.ndim != 2:
                    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                    raise ConfigError(f"backbone must return a (B, D) feature tensor, got {got}")
                features.append(out.float().cpu())
                labels.append(targets.cpu())
    finally:
        backbone.train(was_training)
    if not features:
        raise ConfigError("loader yielded no batches")
    return torch.cat(features), torch.cat(labels)
