"""Pre-training entry point: config -> data, method, Lightning trainer -> checkpoints and metrics."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.strategies import StrategyRegistry
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from sslib.app import methods
from sslib.app.builders import config_keys, section_keys
from sslib.app.callbacks import (
    AtomicCheckpointIO,
    DivergenceGuard,
    SaveAndStop,
    StepMetricsBar,
    SyncBatchNormPlugin,
)
from sslib.app.checkpoint import trained_epochs
from sslib.app.config import to_dict
from sslib.app.datamodule import SSLDataModule
from sslib.app.methods.base import STEP_METRICS
from sslib.app.run_checks import check_run_config
from sslib.errors import ConfigError, MissingFileError
from sslib.io import atomic_write_text, load_torch_file
from sslib.metrics.online import CHECKPOINT_KEY as ONLINE_RECORD_KEY
from sslib.validation import check_int_at_least

LAST_CHECKPOINT = "checkpoints/last.ckpt"


def resume_path(resume: str, run_dir: Path) -> str | None:
    """The checkpoint to resume from: ``auto`` (last.ckpt if present), ``never``, or a path."""
    if resume == "never":
        return None
    if resume == "auto":
        last = run_dir / LAST_CHECKPOINT
        return str(last) if last.is_file() else None
    if not Path(resume).is_file():
        raise MissingFileError(f"resume checkpoint '{resume}' does not exist (use resume=auto|never|<file>)")
    return resume


# Settings that may differ between a run and its resumption (they do not change what is trained).
RUNTIME_KEYS = (
    "resume",
    "baseline_eval",
    "logger",
    "trainer.enable_progress_bar",
    "data.num_workers",
    "data.loader",
    "data.persistent_workers",
    "data.pin_memory",
    "online_eval.every_n_epochs",  # how often and on what the monitor runs, not what is trained
    "trainer.check_val_every_n_epoch",
    "online_eval.bank_fraction",
    "online_eval.bank_dtype",
    "online_eval.monitor_samples",  # label-free monitors: what is logged, not what is trained
    "online_eval.rank_collapse_threshold",
    "checkpoint",  # how often last.ckpt is written
    "compile_backbone",  # how the backbone's forward runs, not what it computes
    "channels_last",  # how its tensors are laid out in memory
)

# Where a run's files are, not what is trained: a moved run folder or dataset is the same run.
PATH_KEYS = ("run_dir", "data.root")

# What a run may be continued with (resume=auto): its length. The schedules are functions of the step and
# of the run's total steps, so the run continues on the schedules of its new length from the step reached.
LENGTH_KEYS = ("trainer.max_epochs",)


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.update(_flatten(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return out


def config_changes(old: DictConfig, new: DictConfig) -> list[str]:
    """Keys whose values differ between two run configs, ignoring :data:`RUNTIME_KEYS` and
    :data:`PATH_KEYS`."""
    a, b = (_flatten(to_dict(c)) for c in (old, new))
    ignored = (*RUNTIME_KEYS, *PATH_KEYS)
    keep = lambda k: not any(k == r or k.startswith(f"{r}.") for r in ignored)  # noqa: E731
    return sorted(k for k in set(a) | set(b) if keep(k) and a.get(k) != b.get(k))


def check_same_run(
    cfg: DictConfig, run_dir: Path, advice: str | None = None, may_change: Sequence[str] = ()
) -> None:
    """``resume=auto`` must not continue a different experiment that happens to share ``run_dir``: one
    line naming the changed keys (other than ``may_change``), ending with ``advice`` (by default: how to
    continue the run's weights with the new settings, or start elsewhere)."""
    saved = run_dir / "config.yaml"
    changes = config_changes(cast(DictConfig, OmegaConf.load(saved)), cfg) if saved.is_file() else []
    changes = [k for k in changes if k not in may_change]
    if changes:
        shown = ", ".join(changes[:6]) + (f" and {len(changes) - 6} more" if len(changes) > 6 else "")
        advice = advice or (
            f"to train on from its weights with these settings use resume={run_dir / LAST_CHECKPOINT}; "
            "to start afresh set another run_dir=... (or resume=never, which overwrites this run)"
        )
        raise ConfigError(f"run_dir {run_dir} holds a run with a different config ({shown}); {advice}")


def report_new_length(state: dict, cfg: DictConfig) -> None:
    """Log, when checkpoint ``state`` was trained for another ``trainer.max_epochs`` than ``cfg``'s, that the
    run continues on the schedules of the new length from the step it reached."""
    old = state.get("hyper_parameters", {}).get("cfg", {}).get("trainer", {}).get("max_epochs")
    new = cfg.trainer.max_epochs
    if old is not None and old != new:
        rank_zero_info(
            f"continuing after step {state['global_step']} (epoch {trained_epochs(state)}) with "
            f"trainer.max_epochs={new} (was {old}): the lr, weight-decay, EMA-momentum and temperature "
            f"schedules continue from this step on the schedule of a {new}-epoch run"
        )


# What a checkpoint's weights are shaped by: resuming with other values cannot load them.
ARCHITECTURE_KEYS = ("method.name", "method.num_prototypes", "method.projector_dims", "method.predictor_dims")


def check_same_architecture(state: dict, cfg: DictConfig, ckpt: str) -> None:
    """One line when checkpoint ``ckpt`` (loaded as ``state``) was trained with another method, backbone or
    head sizes than ``cfg``, whose weights it cannot hold."""
    saved = state.get("hyper_parameters", {}).get("cfg")
    if not isinstance(saved, dict):
        return
    old, new = _flatten(saved), _flatten(to_dict(cfg))
    keys = [k for k in sorted(set(old) | set(new)) if k in ARCHITECTURE_KEYS or k.startswith("backbone.")]
    changed = [k for k in keys if old.get(k) != new.get(k)]
    if changed:
        was = " ".join(f"{k}={old.get(k)}" for k in changed[:3])
        now = " ".join(f"{k}={new.get(k)}" for k in changed[:3])
        raise ConfigError(
            f"checkpoint {ckpt} was trained with {was}, this run has {now}: resume from a checkpoint of "
            "the same method, backbone and heads, or start afresh (resume=never, or another run_dir)"
        )


def resume_position(state: dict) -> tuple[int, int]:
    """``(epoch, batches)`` of a loaded checkpoint ``state``: the epoch a resumed run starts in and the
    batches of it already trained (0 unless the checkpoint was written mid-epoch).

    Lightning creates the first training iterator before it restores its loops, so the data module's
    sampler must be told (sslib.data.sampling makes order and crops a function of the epoch and index).
    An epoch in progress has been started but not processed: its batch counter is then the position.
    """
    loop = state["loops"]["fit_loop"]
    epoch = trained_epochs(state)
    started = loop["epoch_progress"]["current"]["started"]
    batches = loop["epoch_loop.batch_progress"]["current"]["processed"] if started > epoch else 0
    return epoch, int(batches)


def finished_run(state: dict, cfg: DictConfig) -> dict[str, float] | None:
    """For a loaded checkpoint ``state`` that has trained all ``trainer.max_epochs``: ``finished_epochs`` and
    its last online metrics (``val/...``), so that running a finished run again reports it and trains
    nothing (nor adds a logger version); ``None`` for a run still to train."""
    epochs = trained_epochs(state)
    if epochs < cfg.trainer.max_epochs:
        return None
    record = state.get(ONLINE_RECORD_KEY) or {}
    return {
        "finished_epochs": float(epochs),
        **{f"val/{k}": float(v) for k, v in record.items() if k != "epochs"},
    }


def run_id(run_dir: Path) -> str:
    """A stable id per run folder (W&B resumes the same run when the folder is resumed)."""
    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]


def _require_logger_package(name: str) -> None:
    """Import the package of ``logger=name`` (``tensorboard``, ``wandb``: also the extras' names), else a
    one-line error saying how to install it."""
    from importlib import import_module

    try:
        import_module(name)
    except ImportError:
        raise ConfigError(
            f"logger={name} needs the {name} package: pip install 'sslib-vision[{name}]' "
            f"(from a clone: pip install -e '.[{name}]')"
        ) from None


def build_logger(cfg: DictConfig, run_dir: Path) -> Logger:
    """CSV metrics under ``run_dir/logs`` (default), TensorBoard event files under ``run_dir/tensorboard``
    (``logger=tensorboard``) or Weights & Biases (``logger=wandb``)."""
    if cfg.logger.name == "csv":
        return CSVLogger(save_dir=str(run_dir), name="logs")
    _require_logger_package(cfg.logger.name)
    if cfg.logger.name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", default_hp_metric=False)
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        offline=cfg.logger.offline,
        save_dir=str(run_dir),
        name=cfg.name,
        id=run_id(run_dir),
        resume="allow",
    )


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


def available_devices(accelerator: str) -> int:
    """Devices this machine offers to ``accelerator``: its GPUs for gpu/cuda, 1 for mps, its cores for
    cpu (one process each), and for auto the GPUs if there are any, else one device (several CPU
    processes must be asked for with accelerator=cpu, not found by accident on a machine without GPUs)."""
    gpus = torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus):
        return gpus
    if accelerator == "cpu":
        return os.cpu_count() or 1
    return int(torch.backends.mps.is_available()) if accelerator == "mps" else 1


def _device_ids(devices: object, available: int) -> list[int] | None:
    """The device ids ``trainer.devices`` asks for (a count, -1, "auto", "2", "0,1" or a list of ids;
    a count ``n`` means ids ``0..n-1``), or ``None`` when the value has none of these forms."""
    if devices in (-1, "-1", "auto"):
        return list(range(available))
    if isinstance(devices, str) and devices.strip().isdigit():
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool):
        return list(range(devices)) if devices >= 1 else None
    ids = devices.split(",") if isinstance(devices, str) else devices
    if isinstance(ids, (list, tuple)) and ids and all(str(i).strip().isdigit() for i in ids):
        ids = [int(i) for i in ids]
        return ids if len(set(ids)) == len(ids) else None
    return None


def resolve_precision(precision: str, accelerator: str) -> str:
    """``trainer.precision`` as Lightning takes it: ``auto`` (the default) is ``bf16-mixed`` where
    ``accelerator`` resolves to CUDA GPUs that support bfloat16, else ``32-true``; any other value is kept.

    bf16 needs no loss scaling; the prototype head, the labelers and the losses compute in float32
    under it (:mod:`sslib.heads.prototypes`, :mod:`sslib.labelers`).
    """
    if precision != "auto":
        return precision
    cuda = accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if cuda and torch.cuda.is_bf16_supported() else "32-true"


def check_launch(trainer: DictConfig) -> int:
    """The number of processes of ``cfg.trainer`` (devices x num_nodes), after one-line checks that the
    accelerator and strategy are known and that this machine has the devices asked for."""
    accelerator, strategy, devices = trainer.accelerator, trainer.strategy, trainer.devices
    if accelerator not in ACCELERATORS:
        raise ConfigError(f"trainer.accelerator '{accelerator}' is not one of {', '.join(ACCELERATORS)}")
    strategies = ["auto", *(s for s in StrategyRegistry.available_strategies() if s.startswith("ddp"))]
    if strategy not in strategies:
        raise ConfigError(f"trainer.strategy '{strategy}' is not supported; allowed: {', '.join(strategies)}")
    available = available_devices(accelerator)
    plain = OmegaConf.to_object(devices) if OmegaConf.is_config(devices) else devices
    ids = _device_ids(plain, available)
    if ids is None or (accelerator == "cpu" and (isinstance(plain, (list, tuple)) or "," in str(plain))):
        forms = (
            "a count >= 1, -1 or auto" if accelerator == "cpu" else "a count >= 1, -1, auto or a list of ids"
        )
        raise ConfigError(f"trainer.devices={plain!r} is not {forms}")
    if not ids or max(ids) >= available:
        no_gpu = accelerator == "auto" and not torch.cuda.device_count()
        kind = {"cpu": "CPU cores", "mps": "MPS devices"}.get(
            accelerator, "device (no GPU)" if no_gpu else "GPUs"
        )
        hint = "; set trainer.accelerator=cpu for CPU processes" if no_gpu else ""
        raise ConfigError(
            f"trainer.devices={plain} asks for more devices than the {available} {kind} visible to "
            f"trainer.accelerator={accelerator}{hint}"
        )
    nodes = trainer.num_nodes
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
        raise ConfigError(f"trainer.num_nodes must be an integer >= 1, got {nodes!r}")
    return len(ids) * nodes


def check_shards(datamodule: SSLDataModule, world: int) -> None:
    """Every rank must get at least one training batch: ``len(train) // world >= data.batch_size``."""
    n = len(datamodule.train_split())
    per_rank = n // world
    if datamodule.drop_last and per_rank < datamodule.batch_size:
        raise ConfigError(
            f"data.batch_size {datamodule.batch_size} (per device) exceeds the {per_rank} training images of "
            f"each of the {world} processes ({n} in {datamodule.name}); "
            f"use data.batch_size <= {per_rank}"
        )


def log_interval(trainer: dict, train_batches: int | None) -> int:
    """``trainer.log_every_n_steps`` (Lightning's default 50 when absent), at most the training steps of an
    epoch: ``train_batches``, or fewer under ``trainer.limit_train_batches`` (a count or a fraction). An
    epoch then always logs, and Lightning has no interval longer than the epoch to warn about."""
    every = check_int_at_least("trainer.log_every_n_steps", trainer.get("log_every_n_steps", 50), 1)
    if train_batches is None:
        return every
    limit = trainer.get("limit_train_batches")
    if isinstance(limit, float):
        train_batches = int(train_batches * limit)
    elif isinstance(limit, int) and not isinstance(limit, bool):
        train_batches = min(train_batches, limit)
    return min(every, max(1, train_batches))


def build_trainer(
    cfg: DictConfig, run_dir: Path, callbacks: Sequence[L.Callback] = (), train_batches: int | None = None
) -> L.Trainer:
    """The Lightning trainer of ``cfg.trainer``, with the run's checkpoints, logger and plug-ins.

    One file, ``checkpoints/last.ckpt``, is rewritten at every epoch end (also between online
    evaluations; an epoch's evaluation runs before its save), every ``checkpoint.every_n_steps`` steps,
    and when a stop signal arrives (:class:`sslib.app.callbacks.SaveAndStop`); every write is atomic
    (:class:`sslib.app.callbacks.AtomicCheckpointIO`). ``trainer.sync_batchnorm`` converts BatchNorm layers
    to synchronised ones that also run in CPU processes (:class:`sslib.app.callbacks.SyncBatchNormPlugin`).
    ``trainer.precision=auto`` is resolved by :func:`resolve_precision` (bf16-mixed on CUDA). The
    progress bar (:class:`sslib.app.callbacks.StepMetricsBar`) redraws every ``trainer.log_every_n_steps``
    steps, when the logger also reads the step's metrics, and :class:`sslib.app.callbacks.DivergenceGuard`
    checks the loss then and before every checkpoint, so nothing is copied from the device between.
    With ``train_batches`` (per process and epoch), that interval is at most an epoch (:func:`log_interval`).
    """
    last = run_dir / LAST_CHECKPOINT
    checkpoints = ModelCheckpoint(
        dirpath=last.parent,
        filename=last.stem,
        save_top_k=1,
        monitor=None,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    every = cfg.checkpoint.every_n_steps
    trainer_kwargs = to_dict(cfg.trainer)
    trainer_kwargs["precision"] = resolve_precision(
        trainer_kwargs["precision"], trainer_kwargs["accelerator"]
    )
    sync_bn = SyncBatchNormPlugin()
    log_every = trainer_kwargs["log_every_n_steps"] = log_interval(trainer_kwargs, train_batches)
    bar = [StepMetricsBar(STEP_METRICS, log_every)]
    trainer = L.Trainer(
        **trainer_kwargs,
        default_root_dir=str(run_dir),
        logger=build_logger(cfg, run_dir),
        callbacks=[
            checkpoints,
            DivergenceGuard(log_every),
            SaveAndStop(last, every),
            LearningRateMonitor(logging_interval="step"),
            *(bar if trainer_kwargs.get("enable_progress_bar", True) else []),
            *callbacks,
        ],
        plugins=[AtomicCheckpointIO(), *([sync_bn] if trainer_kwargs.get("sync_batchnorm") else [])],
        use_distributed_sampler=False,  # the data module shards training batches itself (sslib.data.sampling)
    )
    sync_bn.cpu = trainer.strategy.root_device.type == "cpu"
    return trainer


def build_datamodule(cfg: DictConfig) -> SSLDataModule:
    """The data module of ``cfg.data``, its kNN bank drawn per ``cfg.online_eval.bank_fraction``, set up
    (missing or broken data fail here); its errors name the config keys (``data.num_workers``)."""
    kwargs = to_dict(cfg.data)
    with config_keys({**section_keys("data", kwargs), "bank_fraction": "online_eval.bank_fraction"}):
        datamodule = SSLDataModule(**kwargs, bank_fraction=cfg.online_eval.bank_fraction)
        datamodule.setup()
    return datamodule


def remove_partial_writes(path: Path) -> None:
    """Delete the temporary files a killed write of ``path`` left (:func:`sslib.io.atomic_write_bytes`)."""
    for partial in path.parent.glob(f".{path.name}.*.tmp"):
        partial.unlink(missing_ok=True)


def pretrain(cfg: DictConfig, callbacks: Sequence[L.Callback] = ()) -> dict[str, float]:
    """Train ``cfg`` in ``cfg.run_dir`` (resuming per ``cfg.resume``); return the final metrics.

    The returned dict has the last logged metrics (e.g. ``val/knn_top1``) and, for fresh runs with
    ``baseline_eval``, ``baseline/knn_top1`` of the randomly initialised backbone. ``callbacks`` are
    added to the trainer's own (checkpointing, lr monitor).
    """
    world = check_launch(cfg.trainer)
    check_run_config(cfg, world)  # every optimiser value, before any data, baseline or training
    # Seeded after the checks (which build throw-away modules): the weights depend on the seed alone.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)
    ckpt = resume_path(cfg.resume, run_dir)
    position = None
    if ckpt is not None:
        state = load_torch_file(ckpt, mmap=True)  # read once (mapped) for every check and the position
        if cfg.resume == "auto":
            check_same_run(cfg, run_dir, may_change=LENGTH_KEYS)
            finished = finished_run(state, cfg)
            if finished is not None:
                return finished
        check_same_architecture(state, cfg, ckpt)
        report_new_length(state, cfg)
        position = resume_position(state)
        del state  # the mapping is not kept through training
    datamodule = build_datamodule(cfg)  # set up: missing or broken data fail here, before any model is built
    check_shards(datamodule, world)
    if position is not None:
        datamodule.start_epoch, datamodule.start_batch = position
    model = methods.build(cfg, num_classes=datamodule.num_classes, n_global=datamodule.n_global)
    trainer = build_trainer(cfg, run_dir, callbacks, datamodule.train_batches(world))
    if trainer.is_global_zero:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
        remove_partial_writes(run_dir / LAST_CHECKPOINT)
    results: dict[str, float] = {}
    if ckpt is None and cfg.baseline_eval:
        for key, value in trainer.validate(model, datamodule, verbose=False)[0].items():
            results[key.replace("val/", "baseline/")] = float(value)
    with warnings.catch_warnings():
        if datamodule.loader in ("torchvision", "device"):  # their sampler skips the trained batches
            warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before")
        trainer.fit(model, datamodule, ckpt_path=ckpt, weights_only=True)
    results.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return results
