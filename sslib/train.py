"""Pre-training entry point: config -> data, method, Lightning trainer -> checkpoints and metrics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from omegaconf import DictConfig, OmegaConf

from sslib import methods
from sslib.checkpoint import trained_epochs
from sslib.data import SSLDataModule
from sslib.io import atomic_write_text

LAST_CHECKPOINT = "checkpoints/last.ckpt"


def resume_path(resume: str, run_dir: Path) -> str | None:
    """The checkpoint to resume from: ``auto`` (last.ckpt if present), ``never``, or a path."""
    if resume == "never":
        return None
    if resume == "auto":
        last = run_dir / LAST_CHECKPOINT
        return str(last) if last.is_file() else None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"resume checkpoint '{resume}' does not exist (use resume=auto|never|<file>)")
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
)


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.update(_flatten(value, f"{path}.") if isinstance(value, dict) else {path: value})
    return out


def config_changes(old: DictConfig, new: DictConfig) -> list[str]:
    """Keys whose values differ between two run configs, ignoring :data:`RUNTIME_KEYS`."""
    a, b = (_flatten(OmegaConf.to_container(c, resolve=True)) for c in (old, new))
    keep = lambda k: not any(k == r or k.startswith(f"{r}.") for r in RUNTIME_KEYS)  # noqa: E731
    return sorted(k for k in set(a) | set(b) if keep(k) and a.get(k) != b.get(k))


def check_same_run(
    cfg: DictConfig,
    run_dir: Path,
    advice: str = "set another run_dir=..., or resume=never to start over there",
) -> None:
    """``resume=auto`` must not continue a different experiment that happens to share ``run_dir``;
    the one-line error ends with ``advice``."""
    saved = run_dir / "config.yaml"
    changes = config_changes(OmegaConf.load(saved), cfg) if saved.is_file() else []
    if changes:
        raise ValueError(
            f"run_dir {run_dir} holds a run with a different config ({', '.join(changes[:4])}); {advice}"
        )


def resume_epoch(ckpt: str) -> int:
    """The epoch a resumed run starts with: the number of training epochs the checkpoint had run.

    Lightning creates the first training iterator before it restores its loops, so the data module's
    sampler must be told (sslib.data.sampling makes order and crops a function of the epoch).
    """
    return trained_epochs(torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True))


def run_id(run_dir: Path) -> str:
    """A stable id per run folder (W&B resumes the same run when the folder is resumed)."""
    return hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]


def build_logger(cfg: DictConfig, run_dir: Path) -> Logger:
    """CSV metrics under ``run_dir/logs`` (default) or Weights & Biases (``logger=wandb``)."""
    if cfg.logger.name == "csv":
        return CSVLogger(save_dir=str(run_dir), name="logs")
    try:
        import wandb  # noqa: F401
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:
        raise ValueError("logger=wandb needs Weights & Biases: pip install 'sslib[wandb]'") from None
    return WandbLogger(
        project=cfg.logger.project,
        entity=cfg.logger.entity,
        offline=cfg.logger.offline,
        save_dir=str(run_dir),
        name=cfg.name,
        id=run_id(run_dir),
        resume="allow",
    )


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback] = ()) -> L.Trainer:
    # One file, checkpoints/last.ckpt, rewritten at every epoch end (Lightning writes it to a temporary
    # file and moves it into place, so a kill never leaves a truncated checkpoint), also between online
    # evaluations (online_eval.every_n_epochs > 1); an epoch's evaluation runs before its save.
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="last",
        save_top_k=1,
        monitor=None,
        every_n_epochs=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    return L.Trainer(
        **OmegaConf.to_container(cfg.trainer, resolve=True),
        default_root_dir=str(run_dir),
        logger=build_logger(cfg, run_dir),
        callbacks=[checkpoints, LearningRateMonitor(logging_interval="step"), *callbacks],
        use_distributed_sampler=False,  # the data module shards training batches itself (sslib.data.sampling)
    )


def build_datamodule(cfg: DictConfig) -> SSLDataModule:
    """The data module of ``cfg.data``, its kNN bank drawn per ``cfg.online_eval.bank_fraction``."""
    return SSLDataModule(
        **OmegaConf.to_container(cfg.data, resolve=True), bank_fraction=cfg.online_eval.bank_fraction
    )


def pretrain(cfg: DictConfig, callbacks: list[L.Callback] = ()) -> dict[str, float]:
    """Train ``cfg`` in ``cfg.run_dir`` (resuming per ``cfg.resume``); return the final metrics.

    The returned dict has the last logged metrics (e.g. ``val/knn_top1``) and, for fresh runs with
    ``baseline_eval``, ``baseline/knn_top1`` of the randomly initialised backbone. ``callbacks`` are
    added to the trainer's own (checkpointing, lr monitor).
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)
    ckpt = resume_path(cfg.resume, run_dir)
    datamodule = build_datamodule(cfg)
    datamodule.setup()  # fail fast on missing or broken data, before any model is built
    if ckpt is not None:
        if cfg.resume == "auto":
            check_same_run(cfg, run_dir)
        datamodule.start_epoch = resume_epoch(ckpt)
    model = methods.build(cfg, num_classes=datamodule.num_classes, n_global=datamodule.n_global)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    trainer = build_trainer(cfg, run_dir, callbacks)
    results: dict[str, float] = {}
    if ckpt is None and cfg.baseline_eval:
        for key, value in trainer.validate(model, datamodule, verbose=False)[0].items():
            results[key.replace("val/", "baseline/")] = float(value)
    trainer.fit(model, datamodule, ckpt_path=ckpt)
    results.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    return results
