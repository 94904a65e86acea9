"""Model zoo: published self-supervised backbones with verified, cached downloads.

``sslib.app.zoo.entries()`` gives the entries of ``sslib/app/zoo/manifest.yaml``; ``sslib.app.zoo.load(name)`` downloads a
checkpoint once into the cache (``$SSLIB_ZOO_CACHE``, else ``<torch hub dir>/checkpoints/sslib``) with
:mod:`pooch`, verifies its SHA-256, converts its published layout and returns the backbone in eval mode.
Files are read with ``weights_only=True`` or safetensors, so a checkpoint can never run code.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from sslib import backbones
from sslib.app.zoo.cache import DownloadError, fetch, resolve_cache_dir, sha256_file
from sslib.app.zoo.convert import convert
from sslib.app.zoo.manifest import Entry, load_manifest
from sslib.app.zoo.weights import load_into, read_weights
from sslib.errors import ConfigError

__all__ = ["DownloadError", "Entry", "download", "entries", "get", "load", "names", "resolve_cache_dir"]


def entries() -> list[Entry]:
    """Every entry of the zoo manifest, in manifest order."""
    return load_manifest()


def names() -> list[str]:
    """The names of the zoo's entries."""
    return [entry.name for entry in entries()]


def get(name: str) -> Entry:
    """The entry called ``name``; an unknown name is a one-line ``ConfigError`` listing the names."""
    for entry in entries():
        if entry.name == name:
            return entry
    raise ConfigError(f"unknown zoo model '{name}'; available: {', '.join(names())}")


def download(model: str | Entry, cache_dir: str | Path | None = None, allow_unverified: bool = False) -> Path:
    """The local path of ``model``'s checkpoint, downloaded and verified unless already cached.

    A cached file whose SHA-256 matches the entry is reused without touching the network. Entries
    without a pinned SHA-256 are refused unless ``allow_unverified=True``.
    """
    entry = get(model) if isinstance(model, str) else model
    if not entry.verified and not allow_unverified:
        raise ConfigError(
            f"zoo model '{entry.name}' has no pinned sha256, so its download cannot be verified; "
            "pass allow_unverified=True (CLI: --allow-unverified) to use it anyway"
        )
    path = resolve_cache_dir(cache_dir) / entry.filename
    first = not path.is_file()
    fetch(entry.url, path, entry.sha256)
    if first and not entry.verified:
        warnings.warn(
            f"zoo model '{entry.name}' is unverified; downloaded file sha256: {sha256_file(path)}",
            stacklevel=2,
        )
    return path


def load(
    model: str | Entry, cache_dir: str | Path | None = None, allow_unverified: bool = False
) -> nn.Module:
    """``model``'s backbone with its pre-trained weights, in eval mode (see :func:`download`)."""
    entry = get(model) if isinstance(model, str) else model
    path = download(entry, cache_dir, allow_unverified)
    backbone, _ = backbones.build(entry.backbone, **entry.backbone_kwargs)
    state_dict = convert(read_weights(path), entry.format)
    return load_into(backbone, state_dict, f"zoo model '{entry.name}' ({entry.format} file {path})")
