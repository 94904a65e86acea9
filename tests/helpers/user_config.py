"""A user's config folder in a test: write its files, and undo afterwards what importing its code did."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sslib.app.config import CONFIG_PATH_ENV
from sslib.app.methods import METHODS
from sslib.backbones import BACKBONES
from sslib.labelers import LABELERS
from sslib.optim import OPTIMIZERS


def write_files(root: Path, files: dict[str, str]) -> None:
    """Write ``files`` (text by path relative to ``root``), creating their folders."""
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


@contextmanager
def isolated_user_code(root: Path) -> Iterator[None]:
    """Run the block without ``SSLIB_CONFIG_PATH``; then undo the registrations made in sslib's
    registries, the ``sys.path`` entries added, and forget the modules imported from under ``root``."""
    saved_env = os.environ.pop(CONFIG_PATH_ENV, None)
    saved_path = list(sys.path)
    saved = [(registry, dict(registry._factories)) for registry in (LABELERS, METHODS, BACKBONES, OPTIMIZERS)]
    try:
        yield
    finally:
        for registry, factories in saved:
            registry._factories.clear()
            registry._factories.update(factories)
        sys.path[:] = saved_path
        for name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(root)):
                del sys.modules[name]
        os.environ.pop(CONFIG_PATH_ENV, None)
        if saved_env is not None:
            os.environ[CONFIG_PATH_ENV] = saved_env
