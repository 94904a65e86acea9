"""The labeler registry: ``build(name, **kwargs)``, ``available()``, ``@register(name)``."""

from __future__ import annotations

from sslib.errors import ConfigError
from sslib.labelers.base import Labeler
from sslib.registry import Registry

LABELERS: Registry[Labeler] = Registry("labeler")
register = LABELERS.register
available = LABELERS.available


def build(name: str, **kwargs) -> Labeler:
    """Build the labeler registered as ``name``.

    Args:
        name: A registered labeler name (see ``available()``), e.g. ``"mira"``.
        **kwargs (Any): The labeler's constructor arguments.

    Returns:
        The labeler.

    Raises:
        ConfigError: If ``name`` is unknown, an argument is not one the labeler takes, or the factory
            does not build a :class:`Labeler`.
    """
    labeler = LABELERS.build(name, **kwargs)
    if not isinstance(labeler, Labeler):
        raise ConfigError(f"labeler '{name}' built a {type(labeler).__name__}, not a sslib.labelers.Labeler")
    return labeler
