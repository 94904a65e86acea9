"""Compose the Hydra configs shipped in ``sslib/app/conf`` from ``key=value`` overrides, with one-line errors."""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any, cast

from hydra import compose as hydra_compose
from hydra import initialize_config_module
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sslib.errors import ConfigError

log = logging.getLogger(__name__)

CONF_MODULE = "sslib.app.conf"
GROUPS = ("method", "labeler", "backbone", "data", "optim", "trainer", "logger", "recipe")


def to_dict(node: DictConfig) -> dict[str, Any]:
    """The config node ``node`` (a mapping) as a plain, resolved ``dict``: a factory's keyword arguments."""
    return cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))


def run_name(*parts: object) -> str:
    """The default run ``name``: the parts that are not None, joined by '-' (a method may have no labeler)."""
    return "-".join(str(p) for p in parts if p is not None)


OmegaConf.register_new_resolver("sslib.run_name", run_name, replace=True)


def options(group: str) -> list[str]:
    """The config files available in ``group`` (without ``.yaml``)."""
    folder = resources.files(CONF_MODULE) / group
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _check_group_choices(overrides: Sequence[str]) -> dict[str, str]:
    """Validate ``group=option`` overrides; return the chosen options by group."""
    chosen = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        if key in GROUPS:
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
    folder = resources.files(CONF_MODULE) / "method"
    configs = {m: OmegaConf.create((folder / f"{m}.yaml").read_text()) for m in options("method")}
    return [m for m, c in configs.items() if isinstance(c, DictConfig) and c.get("labeler") is not None]


def _no_labeler_error(method: str) -> ConfigError:
    return ConfigError(
        f"method {method} has no pseudo-labeler; labeler= applies to {', '.join(methods_with_labeler())}"
    )


def _null_choice(item: str) -> str | None:
    """``recipe=null`` drops the recipe (Hydra's ``~recipe``); ``labeler=null`` means the method's own."""
    if item == "recipe=null":
        return "~recipe"
    return None if item == "labeler=null" else item


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
            OmegaConf.select(_compose_labeled(others, _check_group_choices(others)), parent)
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


def _drop_recipe_labeler_settings(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Give a swapped labeler its own defaults plus the command line's ``labeler.*``, not the recipe's.

    A recipe's ``labeler:`` block tunes the method's own labeler (e.g. DINO's temperature schedule);
    applied to another labeler it would change what the swap compares (or name a parameter it lacks). The labeler node is composed again without the recipe and put in
    place unresolved, so its interpolations (``${method.num_prototypes}``) still resolve against ``cfg``.
    """
    labeler_items = [o for o in overrides if o.startswith("labeler=") or _is_labeler_key(o)]
    bare = hydra_compose("config", overrides=["~recipe", *labeler_items])
    cfg.labeler = bare.labeler


RECIPE_GROUPS_KEY = "groups"  # a recipe's group choices, e.g. ``groups: {backbone: resnet50}``


def _compose_labeled(overrides: list[str], chosen: dict[str, str]) -> DictConfig:
    """One Hydra compose with the labeler rules of :func:`compose` (unresolved)."""
    if "labeler" in chosen:
        cfg = hydra_compose("config", overrides=overrides)
        own = cfg.method.get("labeler")
        if own is None:
            raise _no_labeler_error(cfg.method.name)
        if chosen["labeler"] != own:
            _drop_recipe_labeler_settings(cfg, overrides)
        return cfg
    # find the method's labeler first; labeler.* overrides apply once it is chosen
    first = hydra_compose("config", overrides=[o for o in overrides if not _is_labeler_key(o)])
    labeler = first.method.get("labeler")
    if labeler is None:  # byol, barlow, simclr
        if any(_is_labeler_key(o) for o in overrides):
            raise _no_labeler_error(first.method.name)
        with open_dict(first):
            first.labeler = None
        return first
    if labeler not in options("labeler"):
        raise ConfigError(f"method.labeler '{labeler}' unknown; available: {', '.join(options('labeler'))}")
    return hydra_compose("config", overrides=[f"labeler={labeler}", *overrides])


def _recipe_group_choices(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """The recipe's ``groups`` as ``group=option`` overrides, less the groups the command line chose.

    Hydra does not let a recipe (a non-primary config) override the defaults list, so a recipe names
    its group choices (e.g. MIRA's ImageNet recipe: ``backbone: resnet50``) under ``groups``.
    """
    groups = cfg.get(RECIPE_GROUPS_KEY)
    if not groups:
        return []
    given = {o.lstrip("+~").split("=", 1)[0] for o in overrides}
    items = []
    for group, option in groups.items():
        folder = group.split("/")
        if group not in given and option not in _options_in(folder):
            raise ConfigError(
                f"recipe sets {RECIPE_GROUPS_KEY}.{group}={option}; available: {', '.join(_options_in(folder))}"
            )
        if group not in given:
            items.append(f"{group}={option}")
    return items


def _options_in(folder: list[str]) -> list[str]:
    return options("/".join(folder))


def _unknown_recipe_key(cfg: DictConfig, bare: DictConfig, path: str = "") -> str | None:
    """The first key path set in ``cfg`` whose parent in ``bare`` (no recipe) is a mapping without it.

    A parent that is ``null`` in ``bare`` (e.g. ``data.local_crops``) accepts any value.
    """
    known = set(bare.keys())  # ``in`` is False for a mandatory (???) value
    for key in cfg:
        full = path + str(key)
        if key not in known:
            return full
        value, reference = cfg._get_node(key), bare._get_node(key)
        if isinstance(value, DictConfig) and isinstance(reference, DictConfig) and not reference._is_none():
            found = _unknown_recipe_key(value, reference, f"{full}.")
            if found:
                return found
    return None


def _check_recipe_keys(cfg: DictConfig, overrides: list[str], chosen: dict[str, str]) -> None:
    """Fail with one line when the recipe sets a key that the composed groups do not define.

    Under a group other than method and data that the command line chose (e.g. ``optim=sgd`` on a LARS
    recipe, ``backbone=timm`` on a ResNet one), such keys are the recipe's settings of the option it was
    written for (LARS's ``eta``): they are dropped, with a log line.
    """
    recipe = chosen.get("recipe") or f"{cfg.method.name}_{cfg.data.name}"
    bare = _compose_labeled([*overrides, "~recipe"], chosen) if "~recipe" not in overrides else cfg
    with open_dict(bare):
        bare[RECIPE_GROUPS_KEY] = None
    while (unknown := _unknown_recipe_key(cfg, bare)) is not None:
        group = unknown.split(".", 1)[0]
        if group not in chosen or group in ("method", "data", "recipe"):  # the recipe is written for these
            raise ConfigError(f"recipe {recipe} sets '{unknown}', which the composed config does not have")
        parent, _, key = unknown.rpartition(".")
        with open_dict(cfg):
            OmegaConf.select(cfg, parent).pop(key)
        log.info("recipe %s: %s does not apply to %s=%s; dropped", recipe, unknown, group, chosen[group])


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved run config for ``overrides`` (e.g. ``["method=mira", "data=cifar100"]``).

    Unless ``labeler=...`` is given, the method's own labeler (``method.labeler``) is used. Methods
    without one (``method.labeler: null``: byol, barlow, simclr) get ``labeler: null`` and refuse
    ``labeler=``/``labeler.*`` overrides. A recipe's ``groups`` (e.g. ``backbone: resnet50``) choose
    groups unless the command line does. Unknown groups, options or keys (on the command line or in a
    recipe), and missing mandatory values raise :class:`ConfigError` (one line).
    """
    overrides = [o for o in map(_null_choice, overrides) if o is not None]
    chosen = _check_group_choices([o for o in overrides if not o.startswith("~")])
    try:
        with initialize_config_module(CONF_MODULE, version_base="1.3"):
            cfg = _compose_labeled(overrides, chosen)
            extra = _recipe_group_choices(cfg, overrides)
            if extra:
                overrides = [*extra, *overrides]
                cfg = _compose_labeled(overrides, chosen)
            _check_recipe_keys(cfg, overrides, chosen)
        with open_dict(cfg):
            cfg.pop(RECIPE_GROUPS_KEY, None)
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
    return cfg
