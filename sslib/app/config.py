"""Compose the Hydra configs shipped in ``sslib/app/conf`` from ``key=value`` overrides, with one-line errors."""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Any, cast

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.core.config_search_path import ConfigSearchPath, SearchPathQuery
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sslib.app import recipe as recipe_file
from sslib.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

CONF_MODULE = "sslib.app.conf"
RECIPE = "recipe"
_ABSENT = object()
GROUPS = ("method", "labeler", "backbone", "data", "optim", "trainer", "logger", RECIPE)


def to_dict(node: DictConfig) -> dict[str, Any]:
    """The config node ``node`` (a mapping) as a plain, resolved ``dict``: a factory's keyword arguments."""
    return cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))


def run_name(*parts: object) -> str:
    """The default run ``name``: the parts that are not None, joined by '-' (a method may have no labeler)."""
    return "-".join(str(p) for p in parts if p is not None)


OmegaConf.register_new_resolver("sslib.run_name", run_name, replace=True)


CONFIG_PATH_ENV = "SSLIB_CONFIG_PATH"  # the user's config folders, os.pathsep-separated
IMPORTS_KEY = "imports"  # a config file's list of Python modules to import before the run is built


def user_config_dirs() -> list[Path]:
    """The user's config folders named by ``SSLIB_CONFIG_PATH`` (``os.pathsep``-separated; the command
    line's ``--config-dir`` puts its folders first), as absolute paths, without repeats."""
    folders: list[Path] = []
    for entry in filter(None, os.environ.get(CONFIG_PATH_ENV, "").split(os.pathsep)):
        folder = Path(entry).expanduser().resolve()
        if not folder.is_dir():
            raise MissingFileError(f"{CONFIG_PATH_ENV} names '{entry}', which is not a folder")
        if folder not in folders:
            folders.append(folder)
    return folders


def search_path() -> list[Traversable]:
    """Where config files are looked for, first match first: the user's folders, then the package's."""
    return [*user_config_dirs(), resources.files(CONF_MODULE)]


@contextmanager
def config_dirs(folders: Sequence[str | Path]) -> Iterator[None]:
    """Within the block, look for config files in ``folders`` first (in this order), then in those of
    ``SSLIB_CONFIG_PATH`` and the package's: what ``--config-dir`` does. A missing folder is a one-line
    :class:`~sslib.errors.MissingFileError`."""
    for folder in folders:
        if not Path(folder).expanduser().is_dir():
            raise MissingFileError(f"config folder '{folder}' does not exist")
    saved = os.environ.get(CONFIG_PATH_ENV)
    os.environ[CONFIG_PATH_ENV] = os.pathsep.join([*map(str, folders), *([saved] if saved else [])])
    try:
        yield
    finally:
        if saved is None:
            del os.environ[CONFIG_PATH_ENV]
        else:
            os.environ[CONFIG_PATH_ENV] = saved


class UserConfigSearchPath(SearchPathPlugin):
    """Hydra search-path plugin: puts :func:`user_config_dirs` before the package's configs, so that a
    user's file adds an option to its group or replaces the shipped one of that name. Search paths
    without sslib's configs (other Hydra applications in the process) are left as they are."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        package = SearchPathQuery(path=f"pkg://{CONF_MODULE}")
        if not any(element.path == package.path for element in search_path.get_path()):
            return
        for folder in user_config_dirs():
            search_path.prepend("sslib-user", f"file://{folder}", anchor=package)


Plugins.instance().register(UserConfigSearchPath)


def options(group: str) -> list[str]:
    """The config files available in ``group`` (without ``.yaml``), in the user's folders and the package's."""
    folders = [folder / group for folder in search_path()]
    return sorted(
        {
            p.name[: -len(".yaml")]
            for f in folders
            if f.is_dir()
            for p in f.iterdir()
            if p.name.endswith(".yaml")
        }
    )


def option_file(group: str, option: str) -> Traversable:
    """The file of ``option`` in ``group``: the first one on the :func:`search_path`."""
    files = [folder / group / f"{option}.yaml" for folder in search_path()]
    return next((f for f in files if f.is_file()), files[-1])


def import_modules(cfg: DictConfig) -> None:
    """Import the Python modules that ``cfg``'s groups (``labeler.imports``, ``method.imports``, ...) and
    its top level list under ``imports``, with the user's config folders first on ``sys.path``: the
    modules that register the labelers, methods or backbones the config names. The lists become one
    top-level ``imports``; a module that fails to import is a one-line :class:`ConfigError` naming it."""
    modules: list[str] = []
    for prefix, node in [("", cfg), *((f"{g}.", cfg.get(g)) for g in GROUPS)]:
        listed = node.get(IMPORTS_KEY) if isinstance(node, DictConfig) else None
        if listed is None:
            continue
        if not isinstance(listed, ListConfig) or not all(isinstance(m, str) for m in listed):
            raise ConfigError(f"{prefix}{IMPORTS_KEY} must be a list of module names, got {listed}")
        modules += [m for m in dict.fromkeys(listed) if m not in modules]
        with open_dict(node):
            node.pop(IMPORTS_KEY)
    if not modules:
        return
    with open_dict(cfg):
        cfg[IMPORTS_KEY] = modules
    sys.path[:0] = [str(f) for f in user_config_dirs() if str(f) not in sys.path]
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ConfigError(f"{IMPORTS_KEY}: cannot import module '{module}': {_one_line(err)}") from None


def _check_group_choices(overrides: Sequence[str]) -> dict[str, str]:
    """Validate ``group=option`` overrides; return the chosen options by group."""
    chosen = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        if key in GROUPS or ("/" in key and not key.startswith(("+", "~"))):  # data/augment=cifar too
            if value not in ("null", *options(key)):
                raise ConfigError(
                    f"unknown {key} '{value}'; available: {', '.join(options(key))}{_hint(key, value)}"
                )
            chosen[key] = value
    return chosen


def _hint(group: str, value: str) -> str:
    """How to write a timm model given as the backbone group (``backbone=vit_tiny_patch16_224``)."""
    if group != "backbone":
        return ""
    import timm  # only on this error path: it is a slow import

    name = value if timm.is_model(value) else "<timm model name>"
    return f"; a timm model is chosen with backbone=timm backbone.model_name={name}"


def methods_with_labeler() -> list[str]:
    """The methods whose config names a pseudo-labeler (``method.labeler`` not null)."""
    return [m for m in options("method") if _own_labeler(m) is not None]


def _no_labeler_error(method: str) -> ConfigError:
    return ConfigError(
        f"method {method} has no pseudo-labeler; labeler= applies to {', '.join(methods_with_labeler())}"
    )


def _take_recipe(overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """The ``recipe=`` choice (``"null"`` for ``recipe=null`` or ``~recipe``; None: the default) and the
    other overrides, less ``labeler=null`` (the method's own labeler, as without it)."""
    choice, rest = None, []
    for item in overrides:
        if item.startswith(f"{RECIPE}=") or item == f"~{RECIPE}":
            choice = item.split("=", 1)[1] if "=" in item else "null"
        elif item != "labeler=null":
            rest.append(item)
    return choice, rest


def _is_labeler_key(item: str) -> bool:
    return item.lstrip("+~").startswith("labeler.")


def _one_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    message = lines[0] if lines else type(err).__name__
    missing = re.search(r"Missing mandatory value: (\S+)", str(err))
    if missing:
        return f"{missing.group(1)} is required: set {missing.group(1)}=..."
    return message


def _unknown_key_message(key: str, value: str, overrides: Sequence[str]) -> str:
    """One line for an override of ``key``, which the composed config lacks: the nearest key of its parent
    node if one is close (``trainer.max_epoch`` -> ``trainer.max_epochs``), else ``+key=value`` where the
    target takes new keys (a ``lightning.Trainer`` argument under ``trainer.``, an optimiser argument under
    ``optim.kwargs.``), else the keys the parent has."""
    parent, _, leaf = key.rpartition(".")
    others = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
    try:
        node = (
            OmegaConf.select(_compose_groups(others, _check_group_choices(others), None), parent)
            if parent
            else None
        )
    except (HydraException, OmegaConfBaseException, ConfigError):
        node = None
    keys = [str(k) for k in node] if isinstance(node, DictConfig) else []
    near = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.75)
    head = f"{key} is not a key of the composed config"
    if near:
        return f"{head}; did you mean {parent}.{near[0]}={value}?"
    if parent == "optim.kwargs" or (parent == "trainer" and leaf in _trainer_arguments()):
        return f"{head} (to add it: +{key}={value})"
    return f"{head}; {parent or 'the config'} has: {', '.join(keys)}" if keys else head


def _trainer_arguments() -> set[str]:
    import inspect

    from lightning import Trainer  # the application layer: only when a trainer key is suggested

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


@functools.cache
def _defaults() -> dict[str, str]:
    """The root config's group choices (``method: mira``, ``data: digits``, ...)."""
    root = OmegaConf.create((resources.files(CONF_MODULE) / "config.yaml").read_text())
    return {
        str(k): str(v)
        for d in root.defaults
        if isinstance(d, DictConfig)
        for k, v in d.items()
        if v is not None
    }


def _method(chosen: dict[str, str]) -> str:
    return chosen.get("method", _defaults()["method"])


def _read_recipe(name: str) -> str | None:
    """The text of the recipe file ``<name>.yaml``: the first one on the :func:`search_path`, or None."""
    file = option_file(RECIPE, name)
    return file.read_text() if file.is_file() else None


def recipe_options() -> list[str]:
    """The names ``recipe=`` takes: every recipe file's ``recipes`` (shared ``_*`` parts excluded)."""
    return recipe_file.recipe_names(_read_recipe, options(RECIPE))


def _find_recipe(choice: str | None, chosen: dict[str, str]) -> recipe_file.Recipe | None:
    """The recipe ``recipe=<choice>`` names, or by default ``<method>_<data>`` if there is one."""
    if choice == "null":
        return None
    name = choice or f"{_method(chosen)}_{chosen.get('data', _defaults()['data'])}"
    found = recipe_file.find(name, _read_recipe, options(RECIPE))
    if found is None and choice is not None:
        raise ConfigError(f"unknown recipe '{choice}'; available: {', '.join(recipe_options())}")
    return found


def _own_labeler(method: str) -> str | None:
    """The method's own labeler (``method.labeler``; None for byol, barlow, simclr)."""
    config = OmegaConf.create(option_file("method", method).read_text())
    return config.get("labeler") if isinstance(config, DictConfig) else None


def _compose_groups(
    overrides: list[str], chosen: dict[str, str], recipe: recipe_file.Recipe | None
) -> DictConfig:
    """The one Hydra composition of a call (unresolved): the recipe's group choices, the labeler, overrides.

    Unless ``labeler=...`` is given, the method's own labeler (``method.labeler``) is chosen. Methods
    without one get ``labeler: null`` and refuse ``labeler=``/``labeler.*`` overrides.
    """
    method = _method(chosen)
    own = _own_labeler(method)
    if own is None and ("labeler" in chosen or any(_is_labeler_key(o) for o in overrides)):
        raise _no_labeler_error(method)
    if own is not None and own not in options("labeler"):
        raise ConfigError(f"method.labeler '{own}' unknown; available: {', '.join(options('labeler'))}")
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    items = []
    for group, option in (recipe.groups if recipe else {}).items():
        if group not in given:
            if option not in options(group):
                raise ConfigError(
                    f"recipe {recipe.name} sets groups.{group}={option}; available: {', '.join(options(group))}"  # type: ignore[union-attr]
                )
            items.append(f"{group}={option}")
    if own is not None and "labeler" not in chosen:
        items.append(f"labeler={own}")
    cfg = hydra_compose("config", overrides=[*items, *overrides])
    if own is None:
        with open_dict(cfg):
            cfg.labeler = None
    return cfg


def _recipe_option(group: str, recipe: recipe_file.Recipe, cfg: DictConfig) -> str | None:
    """The option of ``group`` the recipe is written for: its ``groups`` choice, else its ``<group>.name``
    value; the labeler's is the method's own."""
    if group == "labeler":
        return cfg.method.get("labeler")
    if group in recipe.groups:
        return recipe.groups[group]
    entry = recipe.entries.get(f"{group.replace('/', '.')}.name")
    return None if entry is None else str(entry.value)


def _apply_recipe(
    cfg: DictConfig, recipe: recipe_file.Recipe, overrides: list[str], chosen: dict[str, str]
) -> None:
    """Set the recipe's values on ``cfg``, except under the keys the command line sets (which win).

    A group the command line chooses (``optim=adamw``, ``labeler=sinkhorn``) is the user's: it keeps its
    own defaults unless it is the option the recipe is written for. Each value left out that way, and
    each whose key the composed groups lack, is named in a warning; a key that the method or data config
    lacks is an error in the recipe file.
    """
    given = [o.lstrip("+~").split("=", 1)[0] for o in overrides]
    user = [k for k in given if k not in GROUPS and "/" not in k]
    swapped = {
        g.replace("/", ".") + ".": g
        for g, option in chosen.items()
        if g not in ("method", "data") and option != _recipe_option(g, recipe, cfg)
    }
    left_out: dict[str, list[str]] = {}
    filled: set[str] = set()
    for key, entry in recipe.entries.items():
        if key in recipe_file.DERIVED or any(
            k == key or key.startswith(f"{k}.") or k.startswith(f"{key}.") for k in user
        ):
            continue
        group = next((g for prefix, g in swapped.items() if key.startswith(prefix)), None)
        if group is not None:
            left_out.setdefault(group, []).append(key)
        elif not _set_value(cfg, key, entry.value, filled):
            if key.split(".", 1)[0] in ("method", "data"):
                raise ConfigError(
                    f"recipe {recipe.name} sets '{key}', which the composed config does not have"
                )
            left_out.setdefault("", []).append(key)
    for group, keys in left_out.items():
        why = (
            f"{group}={chosen[group]} keeps its own defaults (the recipe is written for "
            f"{_recipe_option(group, recipe, cfg) or 'another option'})"
            if group
            else "the composed config has no such keys"
        )
        log.warning("recipe %s: not applied, %s: %s", recipe.name, why, ", ".join(keys))


def _set_value(cfg: DictConfig, key: str, value: Any, filled: set[str]) -> bool:
    """Set ``key`` (dotted) to ``value`` if the key exists or its section is null (``data.local_crops``,
    which the recipe then fills: ``filled`` holds such sections); False if the key does not exist."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=_ABSENT) if parent else cfg
    with open_dict(cfg):
        if node is None:
            OmegaConf.update(cfg, parent, {}, merge=False)
            node = OmegaConf.select(cfg, parent)
            filled.add(parent)
        if not isinstance(node, DictConfig) or (leaf not in set(node) and parent not in filled):
            return False  # (``in`` would be False for a mandatory ??? value: hence ``set(node)``)
        OmegaConf.update(cfg, key, value, merge=False)
    return True


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved run config for ``overrides`` (e.g. ``["method=mira", "data=cifar100"]``).

    One Hydra composition of the groups (the recipe's ``groups`` unless the command line chooses them,
    the method's own labeler unless ``labeler=`` swaps it) with the overrides; then the recipe's values
    (``recipe=<name>``, by default ``<method>_<data>`` where it exists; ``recipe=null``: none) on the keys
    the command line does not set. Unknown groups, options or keys, and missing mandatory values raise
    :class:`ConfigError` (one line).
    """
    choice, overrides = _take_recipe(overrides)
    chosen = _check_group_choices([o for o in overrides if not o.startswith("~")])
    try:
        with initialize_config_module(CONF_MODULE, version_base="1.3"):
            recipe = _find_recipe(choice, chosen)
            cfg = _compose_groups(overrides, chosen, recipe)
            if recipe is not None:
                _apply_recipe(cfg, recipe, overrides, chosen)
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        append = re.search(
            r"Could not override '(\S+)'\.\s+To append to your config use \+\S+?=(.*)$", str(err), re.M
        )
        if append:  # e.g. trainer.max_epoch=1, or optim.clip_grad under an optimiser without it
            with initialize_config_module(CONF_MODULE, version_base="1.3"):
                raise ConfigError(
                    _unknown_key_message(append.group(1), append.group(2).strip(), overrides)
                ) from None
        raise ConfigError(_one_line(err)) from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: set {missing[0]}=...")
    import_modules(cfg)
    return cfg
