"""Which implementation builds the training batches: torchvision (any dataset), NVIDIA DALI (image
folders) or the on-device batched multi-crop (datasets that fit in memory, :mod:`sslib.data.device`).

``data.loader``: ``torchvision``, ``dali``, ``device``, or ``auto`` = DALI when it is installed, CUDA is
available and the dataset is an image folder, torchvision otherwise. ``auto`` never picks ``device``:
its crops follow the torchvision loader's distributions but are not the same pixels, so a run's
results would change with the machine it runs on.
"""

from __future__ import annotations

import torch

from sslib.errors import ConfigError

LOADERS = ("auto", "torchvision", "dali", "device")
IMAGE_FOLDERS = ("imagenet", "imagenet100", "folder")
INSTALL_DALI = "pip install 'sslib-vision[dali]'"


def dali_installed() -> bool:
    """Whether ``nvidia.dali`` imports."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def choose_loader(loader: str, dataset: str) -> str:
    """The loader that builds the training batches of ``dataset``.

    Args:
        loader: ``data.loader``, one of :data:`LOADERS`.
        dataset: The dataset's name.

    Returns:
        ``"torchvision"``, ``"dali"`` or ``"device"``.

    Raises:
        ConfigError: If ``loader`` is unknown, or is ``dali`` on a dataset that is not an image folder or
            without DALI installed; the message says what to do.
    """
    if loader not in LOADERS:
        raise ConfigError(f"unknown data.loader {loader!r}; available: {', '.join(LOADERS)}")
    if loader == "auto":
        use_dali = dataset in IMAGE_FOLDERS and torch.cuda.is_available() and dali_installed()
        return "dali" if use_dali else "torchvision"
    if loader == "dali" and dataset not in IMAGE_FOLDERS:
        raise ConfigError(
            f"data.loader=dali reads image folders ({', '.join(IMAGE_FOLDERS)}), not {dataset}; "
            "use data.loader=torchvision"
        )
    if loader == "dali" and not dali_installed():
        raise ConfigError(f"data.loader=dali needs NVIDIA DALI, which is not installed: {INSTALL_DALI}")
    return loader
