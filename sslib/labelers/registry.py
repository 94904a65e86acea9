"""The labeler registry: ``build(name, **kwargs)``, ``available()``, ``@register(name)``."""

from __future__ import annotations

from sslib.errors import ConfigError
from sslib.labelers.base import Labeler
from sslib.registry import Registry

LABELERS: Registry[Labeler] = Registry("labeler")
register = LABELERS.register
available = LABELERS.available


def build(name: str, **kwargs) -> Labeler:
    """Build the labeler registered as ``name``; unknown names or arguments raise a one-line ``ConfigError``."""
    labeler = LABELERS.build(name, **kwargs)
    if not isinstance(labeler, Labeler):
        raise ConfigError(f"labeler '{name}' built a {type(labeler).__name__}, not a sslib.labelers.Labeler")
    return labeler
