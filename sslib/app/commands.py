"""The ``sslib`` command (and ``python -m sslib``): one subcommand per tool, each with its own ``--help``.

``sslib pretrain method=mira data=cifar100`` is ``python scripts/pretrain.py method=mira data=cifar100``;
the scripts in a checkout are thin wrappers of the same functions. A subcommand's module is imported only
when it runs, so ``sslib --help`` starts without loading Lightning.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple


class Command(NamedTuple):
    module: str
    function: str
    summary: str


COMMANDS = {
    "pretrain": Command(
        "sslib.app.cli", "pretrain_main", "pre-train a backbone (Hydra-style key=value overrides)"
    ),
    "ablate": Command("sslib.app.ablate.cli", "ablate_main", "train and compare several methods or labelers"),
    "knn": Command("sslib.app.eval.cli", "knn_main", "weighted kNN of a checkpoint's frozen features"),
    "linear": Command("sslib.app.eval.cli", "linear_main", "linear probe on a frozen backbone"),
    "finetune": Command("sslib.app.eval.cli", "finetune_main", "semi-supervised fine-tuning of the backbone"),
    "transfer": Command("sslib.app.eval.cli", "transfer_main", "linear transfer to other datasets"),
    "umap": Command("sslib.app.eval.cli", "umap_main", "UMAP plot of a checkpoint's features"),
    "evaluate": Command(
        "sslib.app.eval.cli", "evaluate_main", "a checkpoint's evaluation suite as one report"
    ),
    "export": Command("sslib.app.zoo.cli", "export_main", "checkpoint -> backbone safetensors + zoo entry"),
    "zoo": Command("sslib.app.zoo.cli", "zoo_main", "list and download the published checkpoints"),
    "recipes": Command(
        "sslib.app.recipes.cli", "recipes_main", "check every recipe file against the config it composes"
    ),
}

USAGE = (
    "usage: sslib <command> [arguments]   (sslib <command> --help for its own)\n\ncommands:\n"
    + "\n".join(f"  {name:9s} {command.summary}" for name, command in COMMANDS.items())
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sslib <command> ...`` (default ``sys.argv[1:]``); the command's exit status, 2 for an unknown one."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}; available: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    return int(getattr(importlib.import_module(command.module), command.function)(rest))
