"""The API pages show parameters: the core's public docstrings are Google style and document every argument.

``mkdocs.yml`` has mkdocstrings parse docstrings as Google style; a parameter table appears on the API
pages (docs/api/*.md) only where a docstring has an ``Args:`` section. For every core module named by a
``::: module`` directive of those pages, each public function, class and method that the page renders
(no leading underscore; imported names only when listed in ``__all__``; a directive's ``members:`` list
where it gives one) must have a docstring that griffe, mkdocstrings' parser, reads without a warning and
whose ``Args:`` name every parameter of the signature (a class's ``__init__`` parameters go in the class
docstring; ``self``, ``cls``, ``*args`` and ``**kwargs`` are exempt).
"""

from __future__ import annotations

import logging
import re

import pytest

from tests.helpers import ROOT

griffe = pytest.importorskip("griffe", reason="griffe comes with the docs extra (pip install -e '.[docs]')")
yaml = pytest.importorskip("yaml", reason="PyYAML comes with the docs extra (pip install -e '.[docs]')")

API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))

CORE_PACKAGES = (
    "sslib.labelers",
    "sslib.losses",
    "sslib.heads",
    "sslib.backbones",
    "sslib.modules",
    "sslib.metrics",
    "sslib.optim",
    "sslib.registry",
    "sslib.distributed",
    "sslib.errors",
    "sslib.validation",
    "sslib.data",
    "sslib.io",
)
"""The modules (and packages) whose documented objects this test checks: the torch-only core."""

_DIRECTIVE = re.compile(r"^::: (?P<path>[\w.]+)[ \t]*\n(?P<options>(?:[ \t]+\S.*\n)*)", re.MULTILINE)
_MEMBERS = re.compile(r"^\s+members:\s*\[(?P<names>[^\]]*)\]", re.MULTILINE)


def _filters() -> list[tuple[re.Pattern, bool]]:
    """mkdocs.yml's member filters of the python handler, as ``(pattern, exclude)``."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    plugin = next(p["mkdocstrings"] for p in config["plugins"] if isinstance(p, dict) and "mkdocstrings" in p)
    filters = plugin["handlers"]["python"]["options"]["filters"]
    return [(re.compile(f.removeprefix("!")), f.startswith("!")) for f in filters]


FILTERS = _filters()


def _in_core(path: str) -> bool:
    return any(path == p or path.startswith(p + ".") for p in CORE_PACKAGES)


def directives() -> list[tuple[str, list[str] | None]]:
    """``(module path, members list or None)`` of every ``::: module`` directive of the API pages in the core."""
    found = []
    for page in API_PAGES:
        for m in _DIRECTIVE.finditer(page.read_text()):
            if not _in_core(m["path"]):
                continue
            members = _MEMBERS.search(m["options"])
            names = None if members is None else [n.strip() for n in members["names"].split(",") if n.strip()]
            found.append((m["path"], names))
    return found


def _rendered_members(obj, members: list[str] | None):
    """The members of ``obj`` that the API page renders, as mkdocstrings selects them."""
    for name, member in obj.members.items():
        if members is not None:
            if name in members:
                yield member
            continue
        if any(bool(pattern.search(name)) == exclude for pattern, exclude in FILTERS):
            continue
        if member.is_alias and not member.is_public:  # an import the module does not export
            continue
        if member.is_module:
            continue
        yield member


def documented_objects() -> dict[str, object]:
    """Every public function, class and method rendered on the core's API pages, by its canonical path."""
    loader = griffe.GriffeLoader(docstring_parser="google", search_paths=[str(ROOT)])
    loader.load("sslib")
    loader.resolve_aliases(implicit=False, external=False)
    sslib = loader.modules_collection["sslib"]
    found: dict[str, object] = {}
    for path, members in directives():
        module = sslib[path.removeprefix("sslib.")] if path != "sslib" else sslib
        for member in _rendered_members(module, members):
            target = member.final_target if member.is_alias else member
            if not (target.is_function or target.is_class) or not _in_core(target.path):
                continue
            found[target.path] = target
            if target.is_class:
                for method in _rendered_members(target, None):
                    if method.is_function and not method.is_alias:
                        found[method.path] = method
    return found


OBJECTS = documented_objects()


def _signature_parameters(obj) -> list[str]:
    function = obj
    if obj.is_class:
        function = obj.members.get("__init__")
        if function is None or function.is_alias:
            return []  # an inherited or external __init__: nothing of ours to document
    kinds = (griffe.ParameterKind.var_positional, griffe.ParameterKind.var_keyword)
    return [p.name for p in function.parameters if p.name not in ("self", "cls") and p.kind not in kinds]


def docstring_problems(obj) -> list[str]:
    """What keeps ``obj``'s docstring from rendering as a full Google-style entry (empty when nothing does)."""
    if obj.docstring is None or not obj.docstring.value.strip():
        return ["no docstring"]
    records: list[logging.LogRecord] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = _Collect(level=logging.WARNING)
    log = logging.getLogger("griffe")
    log.addHandler(handler)
    try:
        sections = griffe.parse_google(obj.docstring)
    finally:
        log.removeHandler(handler)
    problems = [f"griffe: {r.getMessage()}" for r in records]
    documented = {
        p.name for s in sections if s.kind is griffe.DocstringSectionKind.parameters for p in s.value
    }
    missing = [name for name in _signature_parameters(obj) if name not in documented]
    if missing:
        problems.append(f"Args: does not name {', '.join(missing)}")
    return problems


def test_the_api_pages_show_every_checked_package():
    paths = [path for path, _ in directives()]
    for package in CORE_PACKAGES:
        assert any(p == package or p.startswith(package + ".") for p in paths), f"no API page shows {package}"
        assert any(o == package or o.startswith(package + ".") for o in OBJECTS), (
            f"nothing checked in {package}"
        )


def test_a_docstring_without_args_is_caught():
    bare = griffe.Function("f", parameters=griffe.Parameters(griffe.Parameter("x")))
    bare.docstring = griffe.Docstring("Do it.", parent=bare)
    assert docstring_problems(bare) == ["Args: does not name x"]
    bare.docstring = griffe.Docstring(
        "Do it.\n\nArgs:\n    x: The input.\n    y: Not a parameter.", parent=bare
    )
    assert any("'y'" in p for p in docstring_problems(bare))


@pytest.mark.parametrize("path", sorted(OBJECTS))
def test_public_docstring_is_google_style_with_every_parameter(path):
    problems = docstring_problems(OBJECTS[path])
    assert not problems, f"{path}: " + "; ".join(problems)
