"""The backbone registry: each factory returns ``(module, feat_dim)``."""

from __future__ import annotations

from torch import nn

from sslib.registry import Registry

Backbone = tuple[nn.Module, int]
"""A backbone module mapping images (B, 3, H, W) to features (B, feat_dim), and ``feat_dim``."""

BACKBONES: Registry[Backbone] = Registry("backbone")
