"""The core parts that a run config names, built from it: the backbone (with the crop sizes it takes), the
projector and the labeler with its attribute schedules. The core constructors take explicit arguments;
this module reads the config keys for them."""

from __future__ import annotations

import dataclasses
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

SMALL_IMAGE_SIZE = 64  # crops up to this size use the CIFAR stem when backbone.cifar is "auto"
IMAGENET_STEM_STRIDE = 4  # a 7x7 stride-2 convolution and a stride-2 max pool


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
    return backbones.build(name, **kwargs)


def build_projector(in_dim: int, method) -> MLP:
    """The projector of a method config: ``MLP([in_dim, *method.projector_dims])`` with its
    ``projector_norm``, ``projector_activation``, ``projector_last_norm`` and ``projector_init``
    (each in every conf/method file that builds a projector)."""
    return MLP(
        [in_dim, *method.projector_dims],
        last_norm=bool(method.projector_last_norm),
        norm=method.projector_norm,
        activation=method.projector_activation,
        init=method.projector_init,
    )


def build_labeler(cfg: DictConfig) -> tuple[labelers.Labeler, dict[str, Ramp]]:
    """The labeler of ``cfg.labeler`` ({name, schedule, **kwargs}) and its attribute schedules.

    A schedule of an attribute the labeler lacks is an error. (A recipe's schedules never reach a
    swapped labeler: :func:`sslib.app.config.compose` gives it its own defaults.)
    """
    kwargs = to_dict(cfg.labeler)
    schedule = ramps(kwargs.pop("schedule", None))
    labeler = labelers.build(kwargs.pop("name"), **kwargs)
    for attr in schedule:
        if not hasattr(labeler, attr):
            raise ConfigError(f"labeler {type(labeler).__name__} has no attribute '{attr}' to schedule")
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
