"""The core parts that a run config names, built from it: the backbone (with the crop sizes it takes), the
projector and the labeler with its attribute schedules. The core constructors take explicit arguments;
this module reads the config keys for them."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from torch import nn

from sslib import backbones, labelers
from sslib.app.config import CONF_MODULE, to_dict
from sslib.data import Augment
from sslib.errors import ConfigError
from sslib.heads import MLP
from sslib.optim.ramps import Ramp, ramps
from sslib.registry import check_kwargs

# the argument a core error message starts with: "temperature must be ...", "blur_p[0] must be ..."
PARAMETER = re.compile(r"\w+(?=[\s\[.=])")
SMALL_IMAGE_SIZE = 64  # crops up to this size use the CIFAR stem when backbone.cifar is "auto"
IMAGENET_STEM_STRIDE = 4  # a 7x7 stride-2 convolution and a stride-2 max pool


@contextmanager
def config_keys(keys: Mapping[str, str]) -> Iterator[None]:
    """Name config keys in the errors of the core built inside the block.

    A core error names the argument it checks (``temperature must be a finite number > 0, got -1``,
    ``blur_p[0] must be in [0, 1], got 2``); a :class:`~sslib.errors.ConfigError` whose message starts with
    a name of ``keys`` is raised again with that name replaced by its config key
    (``labeler.temperature must be ...``). Any other error passes unchanged.
    """
    try:
        yield
    except ConfigError as err:
        message = str(err)
        name = PARAMETER.match(message)
        if name is None or name.group() not in keys:
            raise
        raise ConfigError(keys[name.group()] + message[name.end() :]) from err


def section_keys(section: str, names: Iterable[str]) -> dict[str, str]:
    """``{name: "section.name"}``: the config keys of arguments read from config section ``section``."""
    return {name: f"{section}.{name}" for name in names}


def backbone_spec(cfg: DictConfig | dict) -> tuple[str, dict]:
    """``(name, kwargs)`` of ``cfg.backbone`` ({name, **kwargs}); ``cifar: auto`` follows the crop size."""
    cfg = OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg
    kwargs = to_dict(cfg.backbone)
    name = kwargs.pop("name")
    if kwargs.get("cifar") == "auto":
        kwargs["cifar"] = cfg.data.global_crops.size <= SMALL_IMAGE_SIZE
    return name, kwargs


def crop_sizes(cfg: DictConfig) -> list[tuple[str, int]]:
    """``(key, side)`` of every crop kind of ``cfg.data``: the global crops, then the local ones if any."""
    sizes = [("data.global_crops.size", cfg.data.global_crops.size)]
    if cfg.data.get("local_crops"):
        sizes.append(("data.local_crops.size", cfg.data.local_crops.size))
    return sizes


def stem_output_sizes(cfg: DictConfig) -> list[int]:
    """The side of the stem's output for every crop kind of ``cfg.data`` (:func:`crop_sizes`): the crop's
    own with the CIFAR stem, a quarter of it otherwise."""
    _, kwargs = backbone_spec(cfg)
    stride = 1 if kwargs.get("cifar") else IMAGENET_STEM_STRIDE
    return [int(size) // stride for _, size in crop_sizes(cfg)]


def build_backbone(cfg: DictConfig | dict) -> tuple[nn.Module, int]:
    """Backbone of a run config -> ``(module, feat_dim)``, see :func:`backbone_spec`."""
    name, kwargs = backbone_spec(cfg)
    with config_keys(section_keys("backbone", kwargs)):
        return backbones.build(name, **kwargs)


def check_dims(key: str, dims: object) -> list[int]:
    """``dims``, the value of config key ``key`` (a head's layer widths after its input), as a non-empty
    list of integers >= 1, else a one-line ``ConfigError`` naming ``key``."""
    plain = OmegaConf.to_object(dims) if OmegaConf.is_config(dims) else dims
    if (
        not isinstance(plain, (list, tuple))
        or not plain
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in plain)
    ):
        raise ConfigError(
            f"{key} must be a non-empty list of integers >= 1 (the layer widths after the input), got {plain!r}"
        )
    return list(plain)


def build_projector(in_dim: int, method) -> MLP:
    """The projector of a method config: ``MLP([in_dim, *method.projector_dims])`` with its
    ``projector_norm``, ``projector_activation``, ``projector_last_norm`` and ``projector_init``
    (each in every conf/method file that builds a projector)."""
    dims = check_dims("method.projector_dims", method.projector_dims)
    with config_keys({name: f"method.projector_{name}" for name in ("norm", "activation", "init")}):
        return MLP(
            [in_dim, *dims],
            last_norm=bool(method.projector_last_norm),
            norm=method.projector_norm,
            activation=method.projector_activation,
            init=method.projector_init,
        )


def build_labeler(cfg: DictConfig) -> tuple[labelers.Labeler, dict[str, Ramp]]:
    """The labeler of ``cfg.labeler`` ({name, schedule, **kwargs}) and its attribute schedules.

    A schedule of an attribute the labeler lacks is an error, and so is one whose start or end the
    attribute does not take (a checked attribute, e.g. MIRA's ``beta`` in [0, 1); the values between
    then pass too). (A recipe's schedules never reach a swapped labeler:
    :func:`sslib.app.config.compose` gives it its own defaults.)
    """
    kwargs = to_dict(cfg.labeler)
    name, spec = kwargs.pop("name"), kwargs.pop("schedule", None)
    with config_keys(section_keys("labeler.schedule", spec or {})):
        schedule = ramps(spec)
    with config_keys(section_keys("labeler", kwargs)):
        labeler = labelers.build(name, **kwargs)
    for attr, ramp in schedule.items():
        if not hasattr(labeler, attr):
            raise ConfigError(
                f"labeler.schedule.{attr}: labeler {type(labeler).__name__} has no attribute '{attr}' to schedule"
            )
        initial = getattr(labeler, attr)
        for end in ("start", "end"):
            with config_keys({attr: f"labeler.schedule.{attr}.{end}"}):
                setattr(labeler, attr, getattr(ramp, end))
        setattr(labeler, attr, initial)
    return labeler, schedule


# name -> every Augment field, read from sslib/app/conf/data/augment/<name>.yaml (the config group data/augment)
AUGMENT_PRESETS: dict[str, dict[str, Any]] = {
    path.name[: -len(".yaml")]: yaml.safe_load(path.read_text())
    for path in sorted((resources.files(CONF_MODULE) / "data" / "augment").iterdir(), key=lambda p: p.name)
    if path.name.endswith(".yaml")
}


def augment_preset(name: str, **overrides: Any) -> Augment:
    """The :class:`~sslib.data.Augment` of preset ``name`` (a file of ``conf/data/augment``), with
    ``overrides`` replacing some of its fields."""
    if name not in AUGMENT_PRESETS:
        raise ConfigError(f"unknown augment preset {name!r}; available: {', '.join(AUGMENT_PRESETS)}")
    check_kwargs(Augment, overrides, "augment")
    return dataclasses.replace(Augment(**AUGMENT_PRESETS[name]), **overrides)
