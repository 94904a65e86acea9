"""Source records of the shipped recipes: every hyper-parameter that matters, its value and its source.

``sslib/app/recipes/records/<name>.yaml`` describes one recipe (or a recipe and the variants that inherit
it, e.g. ``mira_cifar10`` and ``mira_cifar100``). :func:`check` composes each recipe and compares every
recorded value with the composed config; :func:`render` writes the tables of ``docs/recipes.md``.
"""

from sslib.app.recipes.record import (
    Entry,
    Record,
    check,
    covered_keys,
    load,
    load_all,
    recipe_config,
    render,
    required_keys,
)

__all__ = [
    "Entry",
    "Record",
    "check",
    "covered_keys",
    "load",
    "load_all",
    "recipe_config",
    "render",
    "required_keys",
]
