"""Helpers shared by the tests: float64 references, probes, process launchers and the repository's paths."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root folder."""


def load(relpath: str) -> ModuleType:
    """Import a script that lives outside the package (``benchmarks/``, ``scripts/``) by its path from ROOT."""
    name = "_sslib_" + Path(relpath).stem
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
