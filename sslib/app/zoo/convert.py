"""Published checkpoint layouts -> backbone state dicts keyed like the plain torchvision/timm module.

Each format says where the backbone's weights sit in the file (a nested dict such as ``teacher`` or
``state_dict``), which key prefixes to strip (DDP's ``module.``, ``backbone.``, ...), and which heads to
drop (projectors, prototypes, classifiers, momentum copies). Whatever is left must be the backbone:
:func:`sslib.app.zoo.weights.load_into` refuses extra or missing keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sslib.app.checkpoint import backbone_state_dict
from sslib.app.zoo.manifest import FORMATS
from sslib.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    """Where a published format keeps the backbone and what surrounds it."""

    containers: tuple[str, ...] = ()
    """Keys of the nested dict holding the weights, tried in order (none found: the top level)."""
    prefixes: tuple[str, ...] = ()
    """Stripped from each key, in this order, where present."""
    drop: tuple[str, ...] = ()
    """Keys starting with these (after stripping) belong to heads and are dropped."""


LAYOUTS: dict[str, Layout] = {
    # torchvision ResNets: plain keys, the ImageNet classifier is not part of the backbone.
    "torchvision": Layout(drop=("fc.",)),
    # facebookresearch/swav: DDP-wrapped model, projection head and prototypes in the same dict;
    # training checkpoints nest it under "state_dict".
    "swav-official": Layout(
        containers=("state_dict",), prefixes=("module.",), drop=("projection_head.", "prototypes.")
    ),
    # facebookresearch/dino: "*_pretrain.pth" is the plain backbone (no fc); a full checkpoint nests
    # the teacher (backbone.* + head.*) under "teacher". Its ViTs keep their keys: DINO's VisionTransformer
    # (vision_transformer.py L134-159 at 7c446df) names its weights as timm's vit_*_patch16_224 does.
    "dino-official": Layout(
        containers=("teacher",), prefixes=("module.", "backbone."), drop=("head.", "fc.")
    ),
    # vturrisi/solo-learn: Lightning checkpoint, backbone.* next to the method's heads and momentum copies.
    "solo-learn": Layout(
        containers=("state_dict",),
        prefixes=("backbone.",),
        drop=("projector.", "predictor.", "prototypes.", "classifier.", "head.", "momentum_", "queue"),
    ),
}


def convert(checkpoint: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The backbone state dict inside ``checkpoint``, a published checkpoint in format ``fmt``.

    ``sslib``: a training checkpoint (its ``backbone.*`` weights) or an exported plain state dict.
    """
    if fmt == "sslib":
        return backbone_state_dict(checkpoint) if "state_dict" in checkpoint else dict(checkpoint)
    if fmt == "mira-official":
        return _official_mira(checkpoint)
    if fmt not in LAYOUTS:
        raise ConfigError(f"unknown checkpoint format '{fmt}'; allowed: {', '.join(FORMATS)}")
    layout = LAYOUTS[fmt]
    container = next((c for c in layout.containers if isinstance(checkpoint.get(c), Mapping)), None)
    weights = checkpoint[container] if container else checkpoint
    state_dict = {}
    for key, value in weights.items():
        for prefix in layout.prefixes:
            key = key.removeprefix(prefix)
        if not key.startswith(layout.drop):
            state_dict[key] = value
    return state_dict


def _official_mira(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """movinghoon/MIRA's layout, read as its ``eval_linear.py`` reads it: the ``state_dict`` keys that
    contain ``encoder.`` (a torchvision ResNet without fc), taken from the momentum (EMA) encoder when the
    file has one (keys containing ``momentum`` or ``ema``), each key cut after its last ``encoder.``."""
    weights = checkpoint.get("state_dict", checkpoint)
    is_ema = lambda key: "momentum" in key or "ema" in key  # noqa: E731
    use_ema = any(is_ema(key) for key in weights)
    return {
        key.split("encoder.")[-1]: value
        for key, value in weights.items()
        if "encoder." in key and is_ema(key) == use_ema and not key.split("encoder.")[-1].startswith("fc.")
    }
