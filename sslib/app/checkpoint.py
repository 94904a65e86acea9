"""Read sslib training checkpoints safely (``weights_only=True``) into plain backbones."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from sslib.app.builders import build_backbone
from sslib.errors import ConfigError
from sslib.io import load_torch_file

BACKBONE_PREFIX = "backbone."


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True`` (it can never run code)."""
    ckpt = load_torch_file(path)
    if (
        not isinstance(ckpt, dict)
        or "state_dict" not in ckpt
        or "cfg" not in ckpt.get("hyper_parameters", {})
    ):
        raise ConfigError(f"checkpoint '{path}' is not an sslib training checkpoint (no state_dict / config)")
    return ckpt


def trained_epochs(ckpt: dict) -> int:
    """The number of training epochs a Lightning checkpoint had run (its epoch counter is 0-based and
    is saved before it advances, so it would count one less)."""
    return int(ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])


def backbone_state_dict(ckpt: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The student backbone's weights, keys as in the plain torchvision/timm module."""
    return {
        k[len(BACKBONE_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(BACKBONE_PREFIX)
    }


def load_backbone(path: str | Path) -> tuple[nn.Module, int]:
    """The pre-trained backbone of an sslib checkpoint -> ``(module, feat_dim)``, in eval mode.

    The module is a plain torchvision ResNet (``fc`` = Identity) or timm model, rebuilt from the
    config stored in the checkpoint.
    """
    ckpt = load_checkpoint(path)
    cfg = OmegaConf.create(ckpt["hyper_parameters"]["cfg"])
    backbone, feat_dim = build_backbone(cfg)
    missing, unexpected = backbone.load_state_dict(backbone_state_dict(ckpt), strict=False)
    if missing or unexpected:
        raise ConfigError(
            f"checkpoint '{path}' does not match backbone {cfg.backbone.name}: "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    return backbone.eval(), feat_dim
