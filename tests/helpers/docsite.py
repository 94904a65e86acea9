"""The documentation site built once per test run (``mkdocs build --strict``), shared by the docs tests."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

HAVE_MKDOCS = importlib.util.find_spec("mkdocs") is not None
needs_mkdocs = pytest.mark.skipif(
    not HAVE_MKDOCS, reason="mkdocs is not installed (pip install -e '.[docs]')"
)


def _mkdocs_command() -> list[str]:
    script = Path(sys.executable).with_name("mkdocs")
    return [str(script)] if script.exists() else [sys.executable, "-m", "mkdocs"]


@functools.cache
def _build(site_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_mkdocs_command(), "build", "--strict", "--site-dir", str(site_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # mkdocs-material's end-of-life banner
    )


def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the strictly built site; the build runs on the first call of the test run only."""
    result = _build(tmp_path_factory.getbasetemp() / "docs-site")
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return tmp_path_factory.getbasetemp() / "docs-site"
