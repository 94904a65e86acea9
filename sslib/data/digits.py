"""The embedded default dataset: scikit-learn's bundled 8x8 digits, as 32x32 RGB images (no download)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor
from torch.utils.data import Dataset

from sslib.errors import ConfigError

SPLITS = ("train", "val")
IMAGE_SIZE = 32


def check_split(split: str) -> str:
    """Check that ``split`` is ``"train"`` or ``"val"``.

    Args:
        split: The split's name.

    Returns:
        ``split``.

    Raises:
        ConfigError: If ``split`` is neither.
    """
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def _digits_images() -> tuple[Tensor, np.ndarray]:
    """All 1797 digits as uint8 (N, 3, 32, 32) images in 0..255, and their (N,) int labels."""
    digits = load_digits()
    small = torch.from_numpy(digits.images * (255.0 / 16.0)).float().unsqueeze(1)  # (N, 1, 8, 8)
    big = F.interpolate(small, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
    images = big.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous()
    return images, digits.target


class DigitsDataset(Dataset):
    """A deterministic, stratified train/val split of scikit-learn's digits, held in memory.

    Items are ``(image, label)`` with ``image`` a uint8 (3, 32, 32) tensor (grayscale replicated to RGB)
    passed through ``transform`` when given.

    Args:
        split: ``"train"`` or ``"val"``.
        val_fraction: The fraction of every class that goes to ``"val"``, in (0, 1).
        seed: Picks the split.
        transform: Applied to each image.

    Raises:
        ConfigError: If ``split`` is unknown or ``val_fraction`` is not in (0, 1).
    """

    classes = [str(digit) for digit in range(10)]

    def __init__(
        self,
        split: str = "train",
        val_fraction: float = 0.2,
        seed: int = 0,
        transform: Callable[[Tensor], Any] | None = None,
    ) -> None:
        check_split(split)
        if not 0 < val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        images, labels = _digits_images()
        train_idx, val_idx = train_test_split(
            np.arange(len(labels)), test_size=val_fraction, stratify=labels, random_state=seed
        )
        indices = np.sort(train_idx if split == "train" else val_idx)
        self.indices: list[int] = indices.tolist()
        self.images = images[indices]
        self.targets: list[int] = labels[indices].tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.targets[index]
