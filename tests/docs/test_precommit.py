"""The pre-commit hooks run the Makefile's checks with the dev extra's tools, and do what they say.

``.pre-commit-config.yaml`` has only local hooks that call ``.venv/bin/<tool>``, so the last test runs
``pre-commit run --all-files`` for real, offline, in a scratch repository of sample files.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from tests.helpers import ROOT

CONFIG = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
HOOKS = {hook["id"]: hook for repo in CONFIG["repos"] for hook in repo["hooks"]}
MAKEFILE = (ROOT / "Makefile").read_text()
REQUIRES = [Requirement(r) for r in importlib.metadata.requires("sslib-vision") or []]
DEV_EXTRA = [r for r in REQUIRES if r.marker is not None and r.marker.evaluate({"extra": "dev"})]
PRE_COMMIT = Path(sys.executable).with_name("pre-commit")


def _make_variable(name: str) -> str:
    (value,) = re.findall(rf"^{name} :?= (.+)$", MAKEFILE, re.M)
    return value.replace("$(VENV)", ".venv")


def _make_recipe(target: str) -> list[str]:
    """The commands of ``target`` in the Makefile, with ``$(VENV)`` written ``.venv``."""
    block = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", MAKEFILE, re.M)
    assert block, f"no target {target} in the Makefile"
    return [line.strip().replace("$(VENV)", ".venv") for line in block[1].splitlines()]


def _owner(executable: str) -> Requirement | None:
    """The dev-extra requirement whose installed distribution provides ``bin/<executable>``."""
    for requirement in DEV_EXTRA:
        files = importlib.metadata.distribution(requirement.name).files or []
        if any(f.name == executable and f.parent.name == "bin" for f in files):
            return requirement
    return None


def test_every_hook_is_a_local_tool_of_the_installed_dev_extra():
    assert all(repo["repo"] == "local" for repo in CONFIG["repos"])
    assert {"ruff-check", "ruff-format", "mypy", "trailing-whitespace", "end-of-file-fixer", "check-yaml",
            "check-added-large-files"} <= set(HOOKS)  # fmt: skip
    for hook_id, hook in HOOKS.items():
        assert hook["language"] == "system", hook_id
        executable = hook["entry"].split()[0]
        assert executable.startswith(".venv/bin/"), f"{hook_id} runs {executable}, not a tool of .venv"
        requirement = _owner(executable.removeprefix(".venv/bin/"))
        assert requirement is not None, f"{hook_id}: {executable} comes from no package of the dev extra"
        version = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(version), f"{requirement.name} {version} is not {requirement}"


def test_ruff_and_mypy_hooks_run_the_makefile_commands_on_the_linted_paths():
    lint, fix = _make_recipe("lint"), _make_recipe("format")
    linted = _make_variable("LINTED").split()
    assert {".venv/bin/ruff check $(LINTED)", ".venv/bin/ruff format --check $(LINTED)"} <= set(lint)
    assert f"{HOOKS['ruff-check']['entry']} $(LINTED)" in fix  # ruff check --fix, as make format
    assert f"{HOOKS['ruff-format']['entry']} $(LINTED)" in fix
    assert HOOKS["mypy"]["entry"] == _make_variable("MYPY") and _make_recipe("typecheck") == ["$(MYPY)"]
    for hook_id in ("ruff-check", "ruff-format"):
        files = re.compile(HOOKS[hook_id]["files"])
        assert all(files.match(p if p.endswith(".py") else f"{p}/x.py") for p in linted), hook_id
        assert not files.match("docs/hooks/mathjax.py")


SAMPLES = {
    "sslib/__init__.py": "def name(x: int) -> str:\n    return x\n",  # mypy: int returned as str
    "tests/test_sample.py": "import os\nvalues = [ 1,2 ]\n",  # ruff: unused import, format
    "notes.md": "two spaces break the line  \ntrailing blanks go \nno newline at the end",
    "conf/bad.yaml": "a: [1, 2\n",
}


def _run_pre_commit(repo: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(PRE_COMMIT), "run", "--all-files", "--color=never"],
        cwd=repo,
        env={**os.environ, "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home")},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.mark.skipif(not PRE_COMMIT.exists(), reason="pre-commit is not installed (pip install -e '.[dev]')")
def test_pre_commit_fixes_and_flags_sample_files_offline(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in (".pre-commit-config.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    (repo / ".venv").symlink_to(Path(sys.executable).parents[1])
    for name, text in SAMPLES.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "big.bin").write_bytes(os.urandom(1100 * 1024))
    _git(repo, "init", "-q")
    _git(repo, "add", ".pre-commit-config.yaml", "pyproject.toml", "big.bin", *SAMPLES)

    first = _run_pre_commit(repo)
    assert first.returncode != 0
    failed = set(re.findall(r"^(.+?)\.{3,}Failed$", first.stdout, re.M))
    assert failed == {HOOKS[h]["name"] for h in HOOKS}, first.stdout
    assert (repo / "tests/test_sample.py").read_text() == "values = [1, 2]\n"
    assert (repo / "notes.md").read_text() == (
        "two spaces break the line  \ntrailing blanks go\nno newline at the end\n"
    )
    assert "sslib/__init__.py:2: error: Incompatible return value type" in first.stdout

    (repo / "sslib/__init__.py").write_text("def name(x: int) -> str:\n    return str(x)\n")
    (repo / "conf/bad.yaml").write_text("a: [1, 2]\n")
    _git(repo, "rm", "-q", "--cached", "big.bin")
    _git(repo, "add", "-u")
    second = _run_pre_commit(repo)
    assert second.returncode == 0, second.stdout
