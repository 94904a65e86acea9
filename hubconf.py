"""torch.hub entry points: one per model of the sslib zoo (``sslib/app/zoo/manifest.yaml``).

    import torch
    torch.hub.list("<owner>/<repo>")       # the entry names: the zoo names with '-' written as '_'
    model = torch.hub.load("<owner>/<repo>", "mira_resnet50_imagenet_400ep_multicrop")

``pretrained=True`` (the default) downloads the checkpoint once into the zoo's cache, checks its
SHA-256 and returns the backbone with the published weights in eval mode (:func:`sslib.app.zoo.load`);
``pretrained=False`` returns the bare architecture, randomly initialised. Each entry also takes the
keyword arguments ``cache_dir`` and ``allow_unverified`` of :func:`sslib.app.zoo.load`.
"""

from __future__ import annotations

from pathlib import Path as _Path
from typing import TYPE_CHECKING

from sslib import backbones
from sslib.app import zoo
from sslib.app.zoo.manifest import load_manifest as _load_manifest

if TYPE_CHECKING:  # torch.hub lists every public callable of this module as an entry: no other names here
    from collections.abc import Callable

    from torch import nn

dependencies = ["torch", "torchvision", "timm", "yaml", "safetensors", "pooch"]

_MANIFEST = _Path(__file__).resolve().parent / "sslib" / "app" / "zoo" / "manifest.yaml"
"""The manifest next to this file, so the entries are those of the checkout torch.hub loaded."""


def _entry_name(zoo_name: str) -> str:
    """The hub entry of zoo model ``zoo_name``: the same name with '-' and '.' written as '_'."""
    return zoo_name.replace("-", "_").replace(".", "_")


def _hub_entry(entry: zoo.Entry) -> Callable[..., nn.Module]:
    """The torch.hub function that builds ``entry``'s backbone, with or without its published weights."""

    def load(
        pretrained: bool = True, cache_dir: str | _Path | None = None, allow_unverified: bool = False
    ) -> nn.Module:
        if pretrained:
            return zoo.load(entry, cache_dir=cache_dir, allow_unverified=allow_unverified)
        backbone, _ = backbones.build(entry.backbone, **entry.backbone_kwargs)
        return backbone

    checked = "SHA-256 pinned" if entry.verified else "no SHA-256 pinned yet: needs allow_unverified=True"
    load.__name__ = load.__qualname__ = _entry_name(entry.name)
    load.__doc__ = (
        f"{entry.method} {entry.backbone} pre-trained on {entry.dataset} for {entry.epochs} epochs "
        f"({entry.headline_metric}; {entry.metrics_source}). Weights: {entry.url} ({checked}).\n\n"
        "pretrained=False gives the bare architecture."
    )
    return load


globals().update({_entry_name(entry.name): _hub_entry(entry) for entry in _load_manifest(_MANIFEST)})
