"""The built wheel: its name and version, the data files it ships, and sslib imported from it alone
(configs and recipes, the zoo's manifest)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

import sslib
from sslib.app import config, zoo
from tests.helpers import ROOT

DIST_NAME = "sslib-vision"
SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")

# Run from an empty folder with only the unpacked wheel in front of the environment's dependencies.
IMPORT_FROM_WHEEL = """
import json, sys
from importlib import resources
import sslib
from sslib.app import config, recipes, zoo
from sslib.app.zoo import manifest
record = recipes.load("mira_cifar10")
cfg = config.compose(["method=mira", "data=cifar10"])
print(json.dumps({
    "file": sslib.__file__,
    "version": sslib.__version__,
    "imagenet100": (resources.files("sslib.data") / "imagenet100.txt").is_file(),
    "recipe_lr": cfg.optim.lr,
    "record_problems": recipes.check(record),
    "zoo": [entry.to_dict() for entry in zoo.entries()],
    "manifest": str(manifest.MANIFEST_PATH),
}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the package sources (so the checkout gets no build/ folder)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(ROOT / "sslib", src / "sslib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = work / "dist"
    # Build with the environment's setuptools when it has one (offline, faster), else in pip's isolation.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(src),
            "--no-deps",
            *isolation,
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("*.whl")
    return path


def test_version_is_semver_and_the_installed_metadata_version():
    assert SEMVER.fullmatch(sslib.__version__), sslib.__version__
    assert importlib.metadata.version(DIST_NAME) == sslib.__version__, "reinstall: pip install -e ."


def test_changelog_latest_release_is_the_version():
    releases = re.findall(
        r"^## \[(\d[^\]]*)\] - \d{4}-\d{2}-\d{2}$",
        (ROOT / "CHANGELOG.md").read_text(),
        re.M,
    )
    assert releases and releases[0] == sslib.__version__


def test_wheel_metadata_has_the_distribution_name_and_sslib_version(wheel):
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(z.read(meta).decode())
    assert metadata["Name"] == DIST_NAME
    assert metadata["Version"] == sslib.__version__


def test_wheel_ships_configs_recipes_and_data(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    package = ROOT / "sslib"
    shipped = [
        *package.glob("app/conf/**/*.yaml"),
        *package.glob("data/**/*.txt"),
        package / "app" / "zoo" / "manifest.yaml",
    ]
    assert len(shipped) > 40
    missing = sorted(str(p.relative_to(ROOT)) for p in shipped if str(p.relative_to(ROOT)) not in names)
    assert missing == []
    assert not any(n.startswith(("tests/", "docs/", "scripts/")) for n in names)


def test_sslib_imported_from_the_wheel_composes_a_recipe_loads_its_record_and_lists_the_zoo(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    run_dir = tmp_path / "empty"
    run_dir.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_FROM_WHEEL],
        cwd=run_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["file"]).is_relative_to(site)
    assert report["version"] == sslib.__version__
    assert report["imagenet100"]
    assert report["record_problems"] == []
    assert report["recipe_lr"] == config.compose(["method=mira", "data=cifar10"]).optim.lr
    assert Path(report["manifest"]).is_relative_to(site)
    assert report["zoo"] == [entry.to_dict() for entry in zoo.entries()] and report["zoo"]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment outside the checkout with the wheel installed by pip (which writes the
    ``sslib`` command); the dependencies come from this environment's site-packages, read through a
    ``.pth`` path entry, so the checkout's editable sslib is not on the path."""
    env = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, capture_output=True)
    python = env / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site) / "deps.pth").write_text("\n".join(deps) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        capture_output=True,
    )
    return env


SEPARATOR = "\n=====\n"
# Every command's --help in one process (each alone would import torch again), from the installed package.
HELP_OF_EVERY_COMMAND = f"""
import contextlib, sys
from sslib.app.commands import main
for command in sys.argv[1:]:
    print({SEPARATOR!r}, end="")
    with contextlib.suppress(SystemExit):  # argparse exits after --help
        assert main([command, "--help"]) == 0
"""


def run_installed(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(env / "bin" / args[0]), *args[1:]],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_installed_sslib_command_runs_every_tool_outside_the_checkout(installed, tmp_path):
    where = run_installed(installed, "python", "-c", "import sslib; print(sslib.__file__)", cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stderr
    listing = run_installed(installed, "sslib", "--help", cwd=tmp_path)
    assert listing.returncode == 0
    commands = [line.split()[0] for line in listing.stdout.splitlines() if line.startswith("  ")]
    assert commands == [
        "pretrain",
        "ablate",
        "knn",
        "linear",
        "finetune",
        "transfer",
        "umap",
        "evaluate",
        "export",
        "zoo",
        "recipes",
    ]
    helps = run_installed(installed, "python", "-c", HELP_OF_EVERY_COMMAND, *commands, cwd=tmp_path)
    assert helps.returncode == 0, helps.stderr
    for command, text in zip(commands, helps.stdout.split(SEPARATOR)[1:], strict=True):
        assert "usage: sslib " + command in text, (command, text)  # each has its own help
    recipes = run_installed(installed, "sslib", "recipes", cwd=tmp_path)
    assert recipes.returncode == 0 and recipes.stdout.strip().endswith(", 0 problems"), recipes.stderr
    cfg = run_installed(
        installed,
        "python",
        "-m",
        "sslib",
        "pretrain",
        "method=swav",
        "data=imagenet",
        "data.root=/x",
        "--cfg",
        cwd=tmp_path,
    )
    assert cfg.returncode == 0 and "freeze_prototypes_steps: 313" in cfg.stdout, cfg.stderr
    bad = run_installed(installed, "sslib", "pretrain", "method=byol2", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown method 'byol2'")
    unknown = run_installed(installed, "sslib", "train", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.strip().startswith("error: unknown command 'train'")
    zoo = run_installed(installed, "sslib", "zoo", "list", cwd=tmp_path)
    assert zoo.returncode == 0 and zoo.stdout.strip(), zoo.stderr
