"""The docs cannot rot: every ```python block of README.md and docs/**/*.md runs, and the site builds.

Each page's python blocks run in order in one fresh namespace (so a page may build on its earlier
blocks), in a temporary working directory. Blocks that must not run use another language tag
(```bash, ```text, ...). Registrations a page makes (e.g. a custom labeler) are undone afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import re
import sys
from pathlib import Path

import pytest
import torch

import sslib
from sslib.registry import Registry
from tests.helpers import ROOT
from tests.helpers.docsite import built_site, needs_mkdocs

PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
RUNNABLE = {"python", "py"}

_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*?)\s*$")


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """Fenced blocks of a Markdown page as ``(first line number, language, code)``.

    Fences may be indented (inside admonitions or lists); the opening indent is removed from the code.
    The language is the first word of the info string, lower-cased, without a leading ``{.`` / ``.``.
    """
    blocks: list[tuple[int, str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        words = m["info"].lstrip("{").split()
        language = words[0].lstrip(".").lower() if words else ""
        close = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body, j = [], i + 1
        while j < len(lines) and not close.match(lines[j]):
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"unclosed code fence opened on line {i + 1}")
        blocks.append((i + 2, language, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def _page_id(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def _all_registries() -> list[Registry]:
    """Every ``Registry`` defined at module level in an imported ``sslib`` module."""
    found: dict[int, Registry] = {}
    for name, module in list(sys.modules.items()):
        if name == "sslib" or name.startswith("sslib."):
            for value in vars(module).values():
                if isinstance(value, Registry):
                    found[id(value)] = value
    return list(found.values())


@pytest.fixture(scope="module", autouse=True)
def import_sslib() -> None:
    """Import every sslib module once, so that all registries exist before a page registers anything.

    A module that does not import is left out here; a page that uses it fails on its own.
    """
    for info in pkgutil.walk_packages(sslib.__path__, prefix="sslib.", onerror=lambda name: None):
        with contextlib.suppress(Exception):
            importlib.import_module(info.name)


@pytest.fixture
def restore_registries():
    """Undo the registrations a page makes, so later tests see only the built-in components."""
    saved = [(registry, dict(registry._factories)) for registry in _all_registries()]
    yield
    for registry, factories in saved:
        registry._factories.clear()
        registry._factories.update(factories)


def test_code_block_parser():
    page = "text\n```python\nx = 1\n```\n\n!!! note\n    ```bash\n    make test\n    ```\n\n````text\n```\n````\n"
    assert code_blocks(page) == [(3, "python", "x = 1\n"), (8, "bash", "make test\n"), (12, "text", "```\n")]


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_code_block_declares_a_language(page):
    """A bare ``` fence would silently escape testing: say ```python to run it, ```text if not."""
    bare = [line for line, language, _ in code_blocks(page.read_text()) if not language]
    assert not bare, f"{_page_id(page)}: code fences without a language at lines {bare}"


def test_docs_have_runnable_examples():
    pages = {_page_id(p) for p in PAGES if any(lang in RUNNABLE for _, lang, _ in code_blocks(p.read_text()))}
    assert {"README.md", "docs/labelers/mira.md", "docs/labelers/custom.md"} <= pages


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_python_examples_run(page, tmp_path, monkeypatch, restore_registries):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "__docs__"}
    for line, language, code in code_blocks(page.read_text()):
        if language in RUNNABLE:
            # Pad with newlines so tracebacks point at the page's own line numbers.
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)


@needs_mkdocs
def test_mkdocs_build_strict(tmp_path_factory):
    site = built_site(tmp_path_factory)
    assert (site / "index.html").is_file()
