"""The worked example of docs/extending.md runs: its config folder, written from the page's titled code
blocks, trains its own method with its own labeler from the command line, and the page's tests pass."""

from __future__ import annotations

import csv
import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT
from tests.helpers.user_config import isolated_user_code, write_files

PAGE = ROOT / "docs" / "extending.md"
FILE_BLOCK = re.compile(r'^```\w+ title="(?P<path>[^"]+)"\n(?P<code>.*?)^```$', re.MULTILINE | re.DOTALL)


def example_files() -> dict[str, str]:
    """The page's files: the code of every block with a ``title="<path>"``, by path."""
    return {m["path"]: m["code"] for m in FILE_BLOCK.finditer(PAGE.read_text())}


@pytest.fixture
def myconf(tmp_path: Path) -> Iterator[Path]:
    """The page's ``myconf`` folder, written under ``tmp_path``; what importing its code did is undone."""
    write_files(tmp_path, example_files())
    with isolated_user_code(tmp_path):
        yield tmp_path / "myconf"


def test_the_page_has_the_example_folder():
    assert set(example_files()) == {
        "myconf/softmax_labeler.py",
        "myconf/memax.py",
        "myconf/labeler/softmax.yaml",
        "myconf/method/memax.yaml",
        "myconf/recipe/memax_digits.yaml",
        "myconf/test_memax.py",
    }


def test_the_example_trains_its_method_with_its_labeler_and_its_tests_pass(myconf, tmp_path, monkeypatch):
    sys.path.insert(0, str(myconf))  # what pytest does for the page's test file
    user_tests = importlib.import_module("test_memax")
    labeler = importlib.import_module("softmax_labeler").SoftmaxLabeler
    calls: list[torch.Size] = []
    assign = labeler.assign
    monkeypatch.setattr(
        labeler, "assign", lambda self, logits: calls.append(logits.shape) or assign(self, logits)
    )

    user_tests.test_mean_entropy_loss_is_zero_for_balanced_clusters_and_log_k_for_one()
    run = tmp_path / "run"
    user_tests.test_memax_trains_with_the_softmax_labeler(run)

    assert calls and all(shape[1] == 300 for shape in calls)  # the method's K prototypes
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    cfg = ckpt["hyper_parameters"]["cfg"]
    assert (cfg["method"]["name"], cfg["labeler"]["name"]) == ("memax", "softmax")
    assert sorted(cfg["imports"]) == ["memax", "softmax_labeler"] and "imports" not in cfg["labeler"]
    assert cfg["data"]["global_crops"]["size"] == 8  # the recipe in the folder extends the digits budget
    rows = list(csv.DictReader((run / "logs" / "version_0" / "metrics.csv").open()))
    assert any(r.get("loss/memax") for r in rows) and any(r.get("labels/clusters_used") for r in rows)
