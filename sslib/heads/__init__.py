"""Heads put on top of backbone features: MLP projectors/predictors and prototype layers."""

from sslib.heads.mlp import MLP
from sslib.heads.prototypes import PrototypeHead

__all__ = ["MLP", "PrototypeHead"]
