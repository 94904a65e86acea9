"""MkDocs hook: ship MathJax with the site, so the equations are typeset without network access.

MathJax 3 comes from the ``django-static-mathjax`` package of the ``docs`` extra (the MathJax
release's files, nothing else). After each build, the TeX-to-HTML component, its TeX extensions
(loaded on demand, e.g. ``\\boldsymbol``) and its fonts are copied to ``site/javascripts/mathjax/``,
the path ``mkdocs.yml`` loads the script from.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError

TARGET = "javascripts/mathjax"
SHIPPED = ("tex-mml-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2")
"""Paths under MathJax's ``es5/`` folder that a page needs: the component loads the rest from these."""


def mathjax_root() -> Path:
    """The installed MathJax release (the folder with its ``package.json`` and ``es5/``)."""
    spec = importlib.util.find_spec("mathjax")
    root = (
        Path(next(iter(spec.submodule_search_locations or []), "")) / "static" / "mathjax" if spec else None
    )
    if root is None or not (root / "es5" / SHIPPED[0]).is_file():
        raise PluginError(
            "MathJax is not installed: pip install -e '.[docs]' (package django-static-mathjax)"
        )
    version = json.loads((root / "package.json").read_text())["version"]
    if not version.startswith("3."):
        raise PluginError(f"MathJax {version} is installed; docs/javascripts/mathjax.js configures MathJax 3")
    return root


def on_post_build(config: MkDocsConfig) -> None:
    """Copy MathJax's component, TeX extensions, fonts and licence into the built site."""
    root = mathjax_root()
    target = Path(config.site_dir) / TARGET
    for relative in SHIPPED:
        source, dest = root / "es5" / relative, target / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(source, dest)
    shutil.copy2(root / "LICENSE", target / "LICENSE")
