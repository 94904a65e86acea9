"""Read weight files without running code, and load state dicts into backbones with one-line errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from sslib.errors import ConfigError


def read_weights(path: str | Path) -> Mapping[str, Any]:
    """The mapping stored at ``path``: a ``.safetensors`` file, else ``torch.load(weights_only=True)``.

    Neither can execute code: a pickle that tries to (e.g. through ``__reduce__``) is refused.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(path)
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle with code, unsupported types
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"weights '{path}' could not be loaded safely (weights_only=True): {message}"
        ) from None
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"weights '{path}' hold a {type(data).__name__}, not a state dict or checkpoint dict"
        )
    return data


def load_into(backbone: nn.Module, state_dict: Mapping[str, Any], source: str) -> nn.Module:
    """Load ``state_dict`` into ``backbone`` (every key must match, shapes included); return it in eval mode.

    BatchNorm ``num_batches_tracked`` counters, which some older checkpoints lack, may be missing.
    """
    expected = backbone.state_dict()
    unexpected = sorted(set(state_dict) - set(expected))
    missing = sorted(k for k in set(expected) - set(state_dict) if not k.endswith("num_batches_tracked"))
    mismatched = [
        f"{k} {_shape(v)} (expected {tuple(expected[k].shape)})"
        for k, v in state_dict.items()
        if k in expected and _shape(v) != tuple(expected[k].shape)
    ]
    problems = [
        f"{what} {_few(keys)}"
        for what, keys in (
            ("unexpected keys", unexpected),
            ("missing keys", missing),
            ("wrong shapes", mismatched),
        )
        if keys
    ]
    if problems:
        raise ConfigError(f"{source} does not fit the backbone: {'; '.join(problems)}")
    backbone.load_state_dict(state_dict, strict=False)
    return backbone.eval()


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__


def _few(keys: list[str], n: int = 3) -> str:
    """The first ``n`` of ``keys`` and how many more there are."""
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
