"""A small, typed name -> factory registry shared by labelers, backbones, optimisers and methods."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Generic, TypeVar

from sslib.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions) for one kind of component.

    Args:
        kind: The component's kind, used in error messages, e.g. ``"labeler"`` gives
            ``unknown labeler 'foo'; available: dino, mira, sinkhorn``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator registering ``factory`` under ``name`` (names are unique).

        Args:
            name: The name to register.

        Returns:
            The decorator, which returns the factory unchanged.

        Raises:
            ConfigError: When decorating, if ``name`` is already registered.
        """

        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ConfigError(f"{self.kind} '{name}' is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def available(self) -> list[str]:
        """Sorted names of the registered factories.

        Returns:
            The names, sorted.
        """
        return sorted(self._factories)

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered under ``name``.

        Args:
            name: A registered name.

        Returns:
            The factory.

        Raises:
            ConfigError: If ``name`` is unknown.
        """
        if name not in self._factories:
            raise ConfigError(f"unknown {self.kind} '{name}'; available: {', '.join(self.available())}")
        return self._factories[name]

    def build(self, name: str, **kwargs) -> T:
        """Build ``name`` with ``kwargs``.

        Args:
            name: A registered name.
            **kwargs (Any): The factory's keyword arguments.

        Returns:
            What the factory returns.

        Raises:
            ConfigError: If ``name`` is unknown or the factory does not take a keyword.
        """
        factory = self.get(name)
        check_kwargs(factory, kwargs, f"{self.kind} '{name}'")
        return factory(**kwargs)

    def __contains__(self, name: object) -> bool:
        return name in self._factories


def check_kwargs(factory: Callable, kwargs: dict, what: str) -> None:
    """Raise a ``ConfigError`` naming any keyword that ``factory`` does not accept.

    Args:
        factory: A class or function.
        kwargs: The keyword arguments it would be called with.
        what: Names the factory in the message, e.g. ``"labeler 'mira'"``.

    Raises:
        ConfigError: If ``factory`` takes no ``**kwargs`` and a keyword is not one of its parameters.
    """
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    allowed = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"{what} got unexpected argument(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
        )
