"""The recipe checker: every shipped recipe composed and compared with its file, and rendered as tables.

A recipe file (``sslib/app/conf/recipe/<name>.yaml``, format in :mod:`sslib.app.recipe`) holds each value
of a recipe next to its source. :func:`check` composes each recipe and compares every value with the
composed config; :func:`render` writes the tables of ``docs/recipes.md``.
"""

from sslib.app.recipe import Entry, Recipe
from sslib.app.recipes.check import (
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
    "Recipe",
    "check",
    "covered_keys",
    "load",
    "load_all",
    "recipe_config",
    "render",
    "required_keys",
]
