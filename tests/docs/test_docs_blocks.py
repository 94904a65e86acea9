"""Output shown in the docs equals what the code prints: the pretrain command's groups, the torch.hub
entries; and a wheel build leaves nothing untracked."""

from __future__ import annotations

import ast
import re

from sslib.app import zoo
from sslib.app.cli import pretrain_main
from tests.helpers import ROOT


def test_the_help_block_of_the_training_page_is_the_real_one(capsys):
    assert pretrain_main(["--help"]) == 0
    real = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    page = (ROOT / "docs" / "training.md").read_text()
    block = page.split("`--help` lists the config groups and their options:", 1)[1].split("```", 2)[1]
    shown = [line for line in block.splitlines() if line.startswith("  ")]
    assert [line.split()[0] for line in shown] == [
        "method", "labeler", "backbone", "data", "optim", "trainer", "logger", "recipe",
    ]  # fmt: skip
    for line in shown:
        group = line.split()[0]
        if line.endswith(", ..."):  # the recipes, cut short
            assert real[group].startswith(line[: -len(", ...")]), group
        else:
            assert real[group] == line, group


def test_the_hub_listing_of_the_zoo_page_is_every_entry():
    page = (ROOT / "docs" / "zoo.md").read_text()
    listing = re.search(r">>> torch\.hub\.list\(.*\n(\[.*\])", page)
    assert listing is not None
    assert ast.literal_eval(listing[1]) == sorted(e.name.replace("-", "_") for e in zoo.entries())


def test_a_wheel_build_leaves_nothing_untracked():
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/build/" in ignored and "/dist/" in ignored
