"""``sslib pretrain [group=option] [key=value] ...`` (``python scripts/pretrain.py``): Hydra-style overrides,
one-line errors."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from sslib.app.config import GROUPS, RECIPE, compose, config_dirs, options, recipe_options
from sslib.errors import ConfigError, SslibError

if TYPE_CHECKING:
    from sslib.app.callbacks import Preempted

USAGE = """usage: sslib pretrain [group=option ...] [key=value ...] [--cfg]   (or python scripts/pretrain.py ...)

Trains a self-supervised backbone; with no arguments, MIRA on the embedded digits dataset (CPU, offline).
  --cfg     print the composed config and exit
  --config-dir DIR, -cd DIR
            look for config files (and the modules they import) in DIR first; repeatable;
            SSLIB_CONFIG_PATH adds folders too (docs/extending.md)
examples:
  sslib pretrain method=mira backbone=resnet18 data=cifar100
  sslib pretrain method=mira labeler=sinkhorn trainer.max_epochs=20
groups:
"""
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")  # Hydra's spellings


def pretrain_main(argv: Sequence[str] | None = None, callbacks: Sequence[Any] = ()) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); ``callbacks`` (Lightning callbacks) are
    added to the trainer's. Exit status: 0 when done, 2 on bad input, 1 when the loss became NaN or Inf
    (stopped before any checkpoint of it), ``128 + signal`` when SIGTERM or SIGUSR1 stopped training after
    saving ``last.ckpt`` (what a shell reports for a job ended by it). Bad input is an
    :class:`~sslib.errors.SslibError`, printed as one line; any other exception propagates with its traceback.
    ``--config-dir DIR`` looks for config files in DIR first (:func:`~sslib.app.config.config_dirs`)."""
    try:
        folders, args = split_config_dirs(sys.argv[1:] if argv is None else argv)
        with config_dirs(folders):
            return _pretrain(args, callbacks)
    except SslibError as err:  # a --config-dir without a folder, or with one that does not exist
        print(f"error: {err}", file=sys.stderr)
        return 2


def split_config_dirs(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """The folders of ``--config-dir DIR`` (``--config-dir=DIR``, ``-cd DIR``) in ``args``, and the other
    arguments."""
    folders, rest = [], []
    items = iter(args)
    for arg in items:
        flag, equals, value = arg.partition("=")
        if flag not in CONFIG_DIR_FLAGS:
            rest.append(arg)
        elif folder := value if equals else next(items, ""):
            folders.append(folder)
        else:
            raise ConfigError(f"{flag} needs a folder: {flag} DIR")
    return folders, rest


def _pretrain(args: list[str], callbacks: Sequence[Any]) -> int:
    """:func:`pretrain_main` once the config folders are set."""
    if {"-h", "--help"} & set(args):
        listed = {g: recipe_options() if g == RECIPE else options(g) for g in GROUPS}
        print(USAGE + "\n".join(f"  {g:9s} {', '.join(names)}" for g, names in listed.items()))
        return 0
    show_cfg = "--cfg" in args
    overrides = [a for a in args if a != "--cfg"]
    try:
        cfg = compose(overrides)
    except SslibError as err:  # bad input; any other exception is a bug and keeps its traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    if show_cfg:
        print(OmegaConf.to_yaml(cfg))
        return 0
    from sslib.app.callbacks import Preempted  # heavy imports only when training
    from sslib.app.train import pretrain

    quiet_libraries()
    try:
        results = pretrain(cfg, list(callbacks))
    except SslibError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # a diverged run (sslib.app.callbacks.DivergenceGuard): nothing was saved after it
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Preempted as stop:
        return stopped(stop)
    if rank_zero():
        report(results, cfg.run_dir)
    return 0


def stopped(stop: Preempted) -> int:
    """A run that a signal stopped after saving its checkpoint: its one line on stderr (from the first
    process only) and the exit status ``128 + signal``, what a shell reports for a job ended by it."""
    if stop.rank == 0:
        print(stop, file=sys.stderr)
    return 128 + stop.signum


def rank_zero() -> bool:
    """Whether this process is the first of its run (each of several processes runs the command line)."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def _not_litlogger_tip(record: logging.LogRecord) -> bool:
    return "try installing [litlogger]" not in record.getMessage()


def quiet_libraries() -> None:
    """Hide two lines of every run that no setting of it changes: Lightning's tip advertising its
    litlogger package (logged by each Trainer) and torch's deprecation of ``LeafSpec``, which Lightning's
    pytree helper still constructs (a ``FutureWarning`` at each fit). Only these exact messages."""
    from lightning.pytorch.utilities.rank_zero import rank_zero_module

    rank_zero_module.log.addFilter(_not_litlogger_tip)
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
        module=r"lightning\.pytorch\.utilities\._pytree",
    )


def report(results: dict[str, float], run_dir: str) -> None:
    """The run's last line: its online kNN top-1 (and the random-init baseline's), or, for a run that had
    already finished, that it had and its final result."""
    knn = results.get("val/knn_top1")
    finished = results.get("finished_epochs")
    prefix = ""
    if finished is not None:
        epochs = int(finished)
        prefix = f"already finished ({epochs} epoch{'s' * (epochs != 1)}), nothing trained; "
    if knn is None:
        print(f"{prefix or 'done; '}outputs in {run_dir}")
        return
    line = f"{prefix}online kNN top-1 (k=20, cosine): {knn:.2f}%"
    if "baseline/knn_top1" in results:
        line += f" (random-init backbone: {results['baseline/knn_top1']:.2f}%)"
    print(f"{line}; outputs in {run_dir}")
