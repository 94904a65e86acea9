"""Checks of a composed run config that must pass before any work starts (data, models, evaluation).

Most values are checked where they are used, and those objects (data module, method) are built first
thing in :func:`sslib.app.train.pretrain`. The optimiser and its schedule, though, are made by Lightning only
when fitting starts, after the random-init baseline evaluation; :func:`check_run_config` checks their
values up front, each error naming the config key (``optim.lr must be a finite number > 0, got -1``).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import nn

from sslib.app.builders import backbone_spec, check_dims, crop_sizes
from sslib.app.methods.base import check_channels_last
from sslib.app.optimizer import configure
from sslib.backbones import check_crop_sizes
from sslib.errors import ConfigError
from sslib.validation import check_bool, check_int_at_least, check_positive


def check_run_config(cfg: DictConfig, world_size: int) -> None:
    """Raise a one-line ``ConfigError`` naming the first bad optimiser or schedule value (or
    ``run_dir``, ``compile_backbone``, ``channels_last``) of ``cfg``.

    The scalar values are checked under their config names; then the run's optimiser and schedule are
    built once on a stand-in parameter (``configure``, which checks everything else: ``optim.kwargs``,
    the warm-up start ratio, the optimiser's own arguments) and thrown away.
    """
    check_run_dir(Path(cfg.run_dir))
    check_bool("compile_backbone", cfg.compile_backbone)
    check_channels_last(cfg.channels_last)
    for key in ("optim.lr", "online_eval.probe_lr"):
        check_positive(key, OmegaConf.select(cfg, key))
    final = cfg.optim.final_lr_ratio
    if isinstance(final, bool) or not isinstance(final, (int, float)) or not 0 <= final <= 1:
        raise ConfigError(
            f"optim.final_lr_ratio must be a number in [0, 1] (final lr / peak lr), got {final!r}"
        )
    check_backbone_inputs(cfg)
    check_run_length_and_batch(cfg)
    check_head_sizes(cfg.method)
    try:
        configure(cfg, nn.Linear(1, 1), nn.Linear(1, 1), world_size, total_steps=1, steps_per_epoch=1.0)
    except (TypeError, ValueError) as err:  # those that do not name their key get the section's
        message = str(err)
        raise ConfigError(message if message.startswith("optim.") else f"optim: {message}") from None


def check_head_sizes(method: DictConfig) -> None:
    """The sizes of the method's heads, those it has: ``method.projector_dims`` and
    ``method.predictor_dims`` (layer widths) and ``method.num_prototypes`` (an integer >= 1)."""
    for key in ("projector_dims", "predictor_dims"):
        if key in method:
            check_dims(f"method.{key}", method[key])
    if "num_prototypes" in method:
        check_int_at_least("method.num_prototypes", method.num_prototypes, 1)


def check_run_length_and_batch(cfg: DictConfig) -> None:
    """A run trains at least one epoch (its schedules need a finite length), on batches of at least two
    samples per device (BatchNorm normalises over the batch: one sample gives zeros), with at least two
    crops per image (every method compares two views)."""
    check_int_at_least("trainer.max_epochs", cfg.trainer.max_epochs, 1)
    batch = cfg.data.batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 2:
        raise ConfigError(
            f"data.batch_size must be an integer >= 2 (per device; BatchNorm needs two samples), got {batch!r}"
        )
    n_global = check_int_at_least("data.global_crops.n", cfg.data.global_crops.n, 1)
    n_local = cfg.data.local_crops.n if cfg.data.get("local_crops") else 0
    if n_global + n_local < 2:
        raise ConfigError(
            f"data.global_crops.n={n_global} with no local crops gives one view of each image; "
            "every method compares two: data.global_crops.n=2 (or add data.local_crops)"
        )


def check_backbone_inputs(cfg: DictConfig) -> None:
    """A ViT's crops must be multiples of its patch size, and a ViT takes no CIFAR stem (one line each)."""
    name, kwargs = backbone_spec(cfg)
    check_crop_sizes(name, kwargs, crop_sizes(cfg))


def check_run_dir(run_dir: Path) -> None:
    """``run_dir`` is a folder this process can create files in, or can be created as one: one line
    when it, or a folder above it, is a file, or when it (else the nearest existing folder above it)
    is not writable."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == run_dir else f"is under {existing}, which is a file"
        raise ConfigError(f"run_dir {run_dir} {where}: set run_dir=... to a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == run_dir else f" cannot be created: {existing}"
        raise ConfigError(
            f"run_dir {run_dir}{where} is not writable by this user: set run_dir=... to a folder you can "
            "write to"
        )
