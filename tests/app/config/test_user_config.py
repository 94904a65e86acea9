"""The user's config folders (``--config-dir``, ``SSLIB_CONFIG_PATH``): searched before the package's, listed
by ``--help`` and the errors; the modules their files list under ``imports`` are imported before the run
is built."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import initialize_config_dir, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from sslib import labelers
from sslib.app.cli import pretrain_main, split_config_dirs
from sslib.app.config import CONF_MODULE, CONFIG_PATH_ENV, compose, config_dirs, methods_with_labeler, options
from sslib.errors import ConfigError, MissingFileError
from tests.helpers.user_config import isolated_user_code, write_files

LABELER = """
import torch

import sslib.labelers


@sslib.labelers.register("softmax")
class SoftmaxLabeler(sslib.labelers.Labeler):
    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature

    def assign(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits / self.temperature, dim=1)
"""


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two config folders: ``a`` adds ``labeler=softmax`` (with its module) and replaces the shipped
    ``labeler=sinkhorn`` (epsilon 0.1); ``b`` replaces it too (epsilon 0.2)."""
    write_files(
        tmp_path,
        {
            "a/labeler/softmax.yaml": "name: softmax\ntemperature: 0.05\nimports: [softmax_labeler]\n",
            "a/softmax_labeler.py": LABELER,
            "a/labeler/sinkhorn.yaml": "name: sinkhorn\nepsilon: 0.1\nn_iters: 3\n",
            "b/labeler/sinkhorn.yaml": "name: sinkhorn\nepsilon: 0.2\nn_iters: 3\n",
        },
    )
    with isolated_user_code(tmp_path):
        yield tmp_path / "a", tmp_path / "b"


def test_a_folder_adds_options_and_replaces_shipped_ones_within_the_block(folders):
    a, _ = folders
    shipped = options("labeler")
    with config_dirs([a]):
        assert options("labeler") == sorted([*shipped, "softmax"])
        assert compose(["method=swav", "recipe=null"]).labeler.epsilon == 0.1
    assert options("labeler") == shipped and CONFIG_PATH_ENV not in os.environ
    assert compose(["method=swav", "recipe=null"]).labeler.epsilon == 0.05  # the package's


def test_config_dirs_come_first_then_the_environment_in_its_order(folders, monkeypatch):
    a, b = folders
    monkeypatch.setenv(CONFIG_PATH_ENV, os.pathsep.join([str(b), str(a)]))
    assert compose(["method=swav", "recipe=null"]).labeler.epsilon == 0.2
    with config_dirs([a]):
        assert compose(["method=swav", "recipe=null"]).labeler.epsilon == 0.1
    assert os.environ[CONFIG_PATH_ENV] == os.pathsep.join([str(b), str(a)])


def test_a_methods_labeler_is_read_from_its_first_file(folders):
    a, _ = folders
    write_files(
        a,
        {
            "method/mira.yaml": "name: mira\nlabeler: null\n",
            "method/memax.yaml": "name: memax\nlabeler: softmax\n",
        },
    )
    with config_dirs([a]):
        found = methods_with_labeler()
    assert "memax" in found and "mira" not in found and "swav" in found


def test_imports_are_imported_and_gathered_at_the_top_level(folders):
    a, _ = folders
    assert "softmax" not in labelers.available()
    with config_dirs([a]):
        cfg = compose(
            ["method=mira", "labeler=softmax", "recipe=null", "+imports=[softmax_labeler,softmax_labeler]"]
        )
    assert list(cfg.imports) == ["softmax_labeler"] and "imports" not in cfg.labeler  # once, at the top level
    assert type(labelers.build("softmax", temperature=cfg.labeler.temperature)).__name__ == "SoftmaxLabeler"


def test_a_module_that_does_not_import_is_one_line_naming_it(folders):
    a, _ = folders
    (a / "labeler" / "softmax.yaml").write_text("name: softmax\nimports: [softmax_labeller]\n")
    with config_dirs([a]), pytest.raises(ConfigError) as err:
        compose(["labeler=softmax"])
    assert str(err.value) == (
        "imports: cannot import module 'softmax_labeller': No module named 'softmax_labeller'"
    )


def test_imports_must_be_a_list_of_module_names(folders):
    a, _ = folders
    (a / "labeler" / "softmax.yaml").write_text("name: softmax\nimports: softmax_labeler\n")
    with (
        config_dirs([a]),
        pytest.raises(ConfigError, match=r"^labeler.imports must be a list of module names"),
    ):
        compose(["labeler=softmax"])


def test_the_command_line_lists_the_folders_options(folders, capsys):
    a, _ = folders
    assert pretrain_main(["--config-dir", str(a), "--help"]) == 0
    assert "  labeler   dino, mira, nearest, sinkhorn, softmax\n" in capsys.readouterr().out
    assert pretrain_main([f"--config-dir={a}", "labeler=softmx"]) == 2
    assert capsys.readouterr().err == (
        "error: unknown labeler 'softmx'; available: dino, mira, nearest, sinkhorn, softmax\n"
    )
    assert CONFIG_PATH_ENV not in os.environ


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--config-dir", "/no/conf"], None, "error: config folder '/no/conf' does not exist\n"),
        (["-cd"], None, "error: -cd needs a folder: -cd DIR\n"),
        (["--cfg"], "/no/conf", f"error: {CONFIG_PATH_ENV} names '/no/conf', which is not a folder\n"),
    ],
)
def test_a_missing_folder_is_one_line(folders, monkeypatch, capsys, args, env, message):
    if env:
        monkeypatch.setenv(CONFIG_PATH_ENV, env)
    assert pretrain_main(args) == 2
    assert capsys.readouterr().err == message


def test_the_flag_takes_hydras_spellings():
    args = ["-cd", "a", "method=mira", "--config-dir=b", "--config-dir", "c", "--cfg"]
    assert split_config_dirs(args) == (["a", "b", "c"], ["method=mira", "--cfg"])


def test_other_hydra_applications_keep_their_search_path(folders, tmp_path, monkeypatch):
    a, _ = folders
    (tmp_path / "app" / "config.yaml").parent.mkdir()
    (tmp_path / "app" / "config.yaml").write_text("x: 1\n")
    monkeypatch.setenv(CONFIG_PATH_ENV, str(a))
    with initialize_config_dir(str(tmp_path / "app"), version_base="1.3"):
        paths = [
            element.path for element in GlobalHydra.instance().config_loader().get_search_path().get_path()
        ]
    assert str(tmp_path / "app") in paths and f"file://{a}" not in paths
    with config_dirs([a]), initialize_config_module(CONF_MODULE, version_base="1.3"):
        paths = [
            element.path for element in GlobalHydra.instance().config_loader().get_search_path().get_path()
        ]
    assert paths.index(f"file://{a}") == paths.index(f"pkg://{CONF_MODULE}") - 1


def test_a_missing_folder_from_python_is_a_missing_file_error():
    with (
        pytest.raises(MissingFileError, match="config folder 'nowhere' does not exist"),
        config_dirs(["nowhere"]),
    ):
        pass


def test_a_module_registering_a_taken_name_is_one_line(folders, capsys):
    a, _ = folders
    taken = "import sslib.labelers\n\n\n@sslib.labelers.register('mira')\nclass Mine(sslib.labelers.Labeler):\n    pass\n"
    write_files(a, {"taken.py": taken})
    assert pretrain_main(["--config-dir", str(a), "+imports=[taken]", "--cfg"]) == 2
    assert capsys.readouterr().err == "error: labeler 'mira' is already registered\n"
