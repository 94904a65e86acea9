"""The two layers: every core module imports, and works, where Lightning, Hydra and OmegaConf cannot be
imported; the import-linter contracts of pyproject.toml hold."""

from __future__ import annotations

import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import sslib
from tests.helpers import ROOT
from tests.helpers.isolation import FRAMEWORKS, WITHOUT_FRAMEWORKS

OPTIONAL = {"sslib.data.dali"}  # NVIDIA DALI, an optional extra; imported only when installed


def core_modules() -> list[str]:
    """Every module of sslib outside ``sslib.app`` (and ``sslib.__main__``, the command's entry)."""
    names = [m.name for m in pkgutil.walk_packages(sslib.__path__, "sslib.")]
    return sorted(n for n in names if not n.startswith("sslib.app") and n != "sslib.__main__")


def test_every_core_module_imports_without_lightning_hydra_or_omegaconf():
    modules = core_modules()
    assert {"sslib.labelers.mira", "sslib.losses", "sslib.modules.ema", "sslib.metrics.online"} <= set(
        modules
    )
    program = (
        WITHOUT_FRAMEWORKS
        + f"""
import importlib
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except ImportError as err:
        if name not in {sorted(OPTIONAL)!r} or "blocked" in str(err):
            raise
try:
    import omegaconf
except ImportError:
    pass
else:
    raise AssertionError("the blocker let omegaconf through")
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {FRAMEWORKS!r})
assert not loaded, loaded
"""
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr.strip().splitlines()[-3:]


def test_the_import_contracts_hold():
    """``lint-imports`` (import-linter) with the layers and forbidden contracts of pyproject.toml."""
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "import-linter is in the dev extra: make dev"
    result = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "3 kept, 0 broken" in result.stdout
