"""The backbone to evaluate, from an sslib run, a zoo entry or any published checkpoint file.

- ``sslib`` (default): an sslib training checkpoint; the backbone is rebuilt from its stored config.
- another format of :data:`sslib.app.zoo.manifest.FORMATS` (``torchvision``, ``mira-official``,
  ``swav-official``, ``dino-official``, ``solo-learn``): the file's backbone weights, found and renamed
  by :func:`sslib.app.zoo.convert.convert`, loaded into backbone ``arch`` (e.g. ``resnet50``) built with
  ``arch_kwargs`` (e.g. ``{"cifar": True}`` for a CIFAR solo-learn ResNet).
- ``zoo:<name>``: the zoo entry ``<name>``, downloaded and verified once (``sslib.app.zoo``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from torch import nn

from sslib import backbones
from sslib.app.checkpoint import load_backbone
from sslib.app.zoo.manifest import FORMATS
from sslib.errors import ConfigError

ZOO_PREFIX = "zoo:"


@dataclass(frozen=True)
class BackboneSource:
    """Where the backbone comes from: ``fmt`` and, for formats other than ``sslib``, ``arch``."""

    fmt: str = "sslib"
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ConfigError(f"checkpoint format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.fmt != "sslib" and self.arch is None:
            raise ConfigError(f"a {self.fmt} checkpoint needs its backbone architecture (e.g. arch=resnet50)")

    def loader(self) -> Callable[[Path], nn.Module]:
        """``path -> backbone`` in eval mode."""
        return lambda path: load_any_backbone(path, self)


def resolve(checkpoint: str | Path) -> tuple[Path, BackboneSource | None]:
    """A checkpoint argument -> ``(local file, its source)``; ``zoo:<name>`` is downloaded (once) and
    carries its entry's format and backbone, a plain path has no source of its own (``None``)."""
    text = str(checkpoint)
    if not text.startswith(ZOO_PREFIX):
        return Path(checkpoint), None
    from sslib.app import zoo  # only when asked: the zoo reads its manifest

    entry = zoo.get(text[len(ZOO_PREFIX) :])
    return zoo.download(entry), BackboneSource(entry.format, entry.backbone, dict(entry.backbone_kwargs))


def open_checkpoint(
    checkpoint: str | Path, fmt: str = "sslib", arch: str | None = None, cifar_stem: bool = False
) -> tuple[Path, BackboneSource]:
    """The checkpoint file (``zoo:<name>`` downloaded) and how to read its backbone: the zoo entry's format
    and backbone, else ``fmt`` and ``arch`` (built with the CIFAR stem when ``cifar_stem``)."""
    path, zoo_source = resolve(checkpoint)
    return path, zoo_source or BackboneSource(fmt, arch, {"cifar": True} if cifar_stem else {})


def load_any_backbone(path: str | Path, source: BackboneSource | None = None) -> nn.Module:
    """The backbone stored at ``path`` in ``source``'s format (default: an sslib run), in eval mode."""
    source = source or BackboneSource()
    if source.fmt == "sslib":
        return load_backbone(path)[0]
    from sslib.app.zoo.convert import convert
    from sslib.app.zoo.weights import load_into, read_weights

    arch = cast(str, source.arch)  # set for every format but sslib (BackboneSource.__post_init__)
    backbone, _ = backbones.build(arch, **source.arch_kwargs)
    return load_into(backbone, convert(read_weights(path), source.fmt), f"{source.fmt} file {path}")
