"""Recipe files (``sslib/app/conf/recipe/<name>.yaml``): each value of a recipe next to its source.

A recipe file is the one place a recipe's values are written. :func:`sslib.app.config.compose` applies its
``values`` and ``deviations`` on top of the group defaults, and ``sslib recipes`` checks the composed
config against the same file and renders it into ``docs/recipes.md``::

    recipes: [mira_cifar10, mira_cifar100]     # the names it is chosen by (default: the file's name)
    extends: [_solo_cifar, _mira]              # optional: files whose entries it inherits, later ones win
    title: MIRA, CIFAR-10/100, ResNet-18
    reproduces: paper Table 7
    sources: {paper: "...", solo: "vturrisi/solo-learn@9187ea3"}
    groups: {backbone: resnet50}               # optional: group choices (the command line still wins)
    values:                                     # key: [value, source]
      method.num_prototypes: [3000, "paper §4.1"]
    deviations:                                 # where sslib differs from the source, and why
      trainer.precision: {value: bf16-mixed, source_value: 16-mixed, source: "...", reason: "..."}

Files whose name starts with ``_`` are shared parts, chosen by no name of their own. Keys are dotted
paths of the composed config; ``global_batch`` and ``backbone.cifar_stem`` are derived from it
(:data:`DERIVED`): the checker compares them, composition does not set them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from sslib.errors import ConfigError

DERIVED = frozenset({"global_batch", "backbone.cifar_stem"})
"""Keys a recipe states and the checker compares, computed from the config rather than set in it."""

Reader = Callable[[str], "str | None"]
"""Reads the text of the recipe file ``<name>.yaml``, or None when there is none."""


@dataclass(frozen=True)
class Entry:
    """One hyper-parameter: sslib's ``value``, where it comes from, and, for a deviation, why it differs."""

    key: str
    value: Any
    source: str
    source_value: Any = None
    reason: str | None = None

    @property
    def deviation(self) -> bool:
        return self.reason is not None


@dataclass
class Recipe:
    """One recipe file with the entries and groups of the files it extends.

    Attributes:
        name: the file's name (without ``.yaml``).
        recipes: the names that choose it (``recipe=<name>`` or the ``<method>_<data>`` default).
        groups: group choices, e.g. ``{"backbone": "resnet50", "data/augment": "cifar_symmetric"}``.
        entries: every value by dotted key, the file's own over those it extends.
    """

    name: str
    recipes: list[str]
    title: str
    reproduces: str
    sources: dict[str, str]
    groups: dict[str, str] = field(default_factory=dict)
    entries: dict[str, Entry] = field(default_factory=dict)


def parse_text(text: str) -> dict[str, Any]:
    """A recipe file's text as plain containers (OmegaConf's YAML rules, as the composed config has)."""
    return OmegaConf.to_container(OmegaConf.create(text), resolve=False)  # type: ignore[return-value]


def _entries(name: str, raw: dict[str, Any]) -> dict[str, Entry]:
    entries = {}
    for key, item in (raw.get("values") or {}).items():
        if not (isinstance(item, list) and len(item) == 2):
            raise ConfigError(f"recipe {name}: values.{key} must be [value, source], got {item!r}")
        entries[key] = Entry(key, item[0], item[1])
    for key, item in (raw.get("deviations") or {}).items():
        missing = {"value", "source_value", "source", "reason"} - set(item)
        if missing:
            raise ConfigError(f"recipe {name}: deviations.{key} lacks {', '.join(sorted(missing))}")
        entries[key] = Entry(key, item["value"], item["source"], item["source_value"], item["reason"])
    return entries


def load(name: str, read: Reader, text: str | None = None) -> Recipe:
    """The recipe file ``name`` (its ``text``, if already read) on top of the files it ``extends`` (one
    name or a list, in order).

    Raises:
        ConfigError: the file, or one it extends, does not exist or is malformed.
    """
    text = read(name) if text is None else text
    if text is None:
        raise ConfigError(f"no recipe file '{name}.yaml'")
    raw = parse_text(text)
    parents = raw.get("extends") or []
    recipe = Recipe(
        name, list(raw.get("recipes") or [name]), raw.get("title", name), raw.get("reproduces", ""), {}
    )
    for parent in [parents] if isinstance(parents, str) else parents:
        base = load(parent, read)
        recipe.entries.update(base.entries)
        recipe.sources.update(base.sources)
        recipe.groups.update(base.groups)
    recipe.entries.update(_entries(name, raw))
    recipe.sources.update(raw.get("sources") or {})
    recipe.groups.update(raw.get("groups") or {})
    return recipe


def find(name: str, read: Reader, names: Iterable[str]) -> Recipe | None:
    """The recipe chosen by ``name``: the file ``<name>.yaml``, else the file among ``names`` whose
    ``recipes`` list holds it (``mira_cifar100`` is written in ``mira_cifar10.yaml``); None if neither.
    Only the files whose text holds ``name`` are parsed."""
    text = read(name)
    if text is not None:
        return load(name, read, text)
    for other in names:
        text = read(other)
        if text is not None and name in text and name in (parse_text(text).get("recipes") or []):
            return load(other, read, text)
    return None


def recipe_names(read: Reader, files: Iterable[str]) -> list[str]:
    """Every name that chooses a recipe among ``files`` (shared parts, named ``_*``, choose none)."""
    names = []
    for file in files:
        if not file.startswith("_"):
            raw = parse_text(read(file) or "{}")
            names += list(raw.get("recipes") or [file])
    return sorted(set(names))
