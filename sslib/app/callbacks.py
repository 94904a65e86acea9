"""Trainer plug-ins of a run: synchronised BatchNorm on any device, atomic checkpoints, checkpoints every
N steps, a clean stop (checkpoint first) on the signals a cluster sends before a time limit or a
preemption, a guard that stops a diverged run before it saves, and a progress bar that reads the step's
metrics only when it redraws."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.plugins import TorchCheckpointIO
from lightning.pytorch.plugins.layer_sync import TorchSyncBatchNorm
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from sslib.distributed import all_reduce, convert_batchnorm, world_size
from sslib.errors import ConfigError
from sslib.io import atomic_write_bytes, load_torch_file

# SLURM: preemption / time limit, and --signal=USR1@T; Ctrl-C in a terminal
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


class SyncBatchNormPlugin(TorchSyncBatchNorm):
    """``trainer.sync_batchnorm=true`` on any device: torch's SyncBatchNorm for GPU processes, and for CPU
    processes (``cpu=True``, which DDP refuses to run torch's layer in) :class:`AllReduceBatchNorm`, with
    the same global-batch statistics and gradients. ``revert`` gives every converted layer back the class
    it had before ``apply`` (BatchNorm1d, 2d or 3d), with its parameters and running statistics."""

    def __init__(self, cpu: bool = False) -> None:
        self.cpu = cpu
        self.originals: dict[str, type[nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d]] = {}

    def apply(self, model: nn.Module) -> nn.Module:
        self.originals = {name: type(m) for name, m in model.named_modules() if isinstance(m, BATCHNORMS)}
        return convert_batchnorm(model) if self.cpu else super().apply(model)

    def revert(self, model: nn.Module) -> nn.Module:
        for name, original in self.originals.items():
            parent, _, child = name.rpartition(".")
            owner = model.get_submodule(parent)
            owner.add_module(child, convert_batchnorm(owner.get_submodule(child), original))
        return model


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file in the same folder, fsynced, then renamed into place
    (:func:`sslib.io.atomic_write_bytes`), so a kill at any moment leaves the previous file intact; read
    back with ``weights_only=True`` (a checkpoint can never run code)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getbuffer())

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict:
        """The checkpoint at ``path`` read with ``weights_only=True``; an unreadable one is one line
        (:func:`sslib.io.load_torch_file`)."""
        return load_torch_file(path, map_location)


class DivergenceGuard(L.Callback):
    """Stops a run whose loss became NaN or Inf, before any checkpoint is written from it.

    Every step adds ``not isfinite(loss)`` to a flag on the device (no read); the flag is read every
    ``every_n_steps`` steps (when the logger reads the metrics anyway) and before every checkpoint, and
    taken over all ranks, so all of them stop together. A diverged run raises ``FloatingPointError``
    naming the steps, and ``checkpoints/last.ckpt`` keeps the last finite weights.
    """

    def __init__(self, every_n_steps: int) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ConfigError(f"every_n_steps must be an integer >= 1, got {every_n_steps!r}")
        self.every_n_steps = every_n_steps
        self.nonfinite: torch.Tensor | None = None
        self.checked_step = 0  # the last step the flag was read at

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            bad = ~torch.isfinite(loss.detach())
            self.nonfinite = bad if self.nonfinite is None else self.nonfinite | bad
        if trainer.global_step % self.every_n_steps == 0:
            self.check(trainer)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        """Raise ``FloatingPointError`` if a loss since the last check was not finite on any rank."""
        if self.nonfinite is None:
            return
        flag = self.nonfinite.to(torch.int32)
        if world_size() > 1:
            flag = all_reduce(flag.reshape(1), op="max")
        since, self.checked_step, self.nonfinite = self.checked_step, trainer.global_step, None
        if flag.any().item():
            raise FloatingPointError(
                f"training diverged: the loss was NaN or Inf at a step in {since + 1}-{trainer.global_step}, "
                "and nothing was saved after it (try a lower optim.lr, or trainer.precision=32-true)"
            )


class StepMetricsBar(TQDMProgressBar):
    """Lightning's TQDM bar showing ``keys`` of the training step, read from the device only when the bar
    redraws (every ``refresh_rate`` steps).

    Metrics logged with ``prog_bar=True`` are copied to the host after every step, which makes the CPU
    wait for the GPU each time; the step logs these ``keys`` without it and the bar reads their latest
    values (``trainer.callback_metrics``, device tensors) at its own rate.

    A run resumed in the middle of an epoch shows that epoch, its length and the batches already
    trained (Lightning starts no epoch then, and its own bar would read ``Training: k/?``).
    """

    def __init__(self, keys: tuple[str, ...], refresh_rate: int = 1) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.keys = keys

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.fit_loop.restarted_mid_epoch:
            self.on_train_epoch_start(trainer, pl_module)
            done = trainer.fit_loop.epoch_loop.batch_idx + 1  # the batches of the checkpoint's epoch
            self.train_progress_bar.initial = self.train_progress_bar.n = done

    def get_metrics(
        self, trainer: L.Trainer, pl_module: L.LightningModule
    ) -> dict[str, int | str | float | dict[str, float]]:
        metrics = super().get_metrics(trainer, pl_module)
        latest = trainer.callback_metrics
        for key in self.keys:
            if key in latest:
                metrics[key] = float(latest[key])
        return metrics


class Preempted(Exception):
    """Training stopped on ``signum`` after saving ``checkpoint`` (raised on every rank)."""

    def __init__(self, signum: int, step: int, checkpoint: Path, rank: int = 0) -> None:
        self.signum, self.step, self.checkpoint, self.rank = signum, step, checkpoint, rank
        super().__init__(
            f"stopped by {signal.Signals(signum).name} after step {step}; {checkpoint} saved, "
            "run the same command (resume=auto) to continue"
        )


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes for this SLURM job (array tasks as ``<job>_<task>``), or ``None``."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")


class SaveAndStop(L.Callback):
    """Writes ``path`` (the run's ``last.ckpt``) every ``every_n_steps`` optimiser steps (0: never
    mid-epoch), and on SIGTERM, SIGUSR1 or SIGINT (Ctrl-C; a second one stops at once) saves it at the
    next step boundary and stops the run.

    The signal only sets a flag; after each training batch the ranks take the maximum of their flags
    (one all-reduce of one integer), so every rank saves and stops after the same step even when the
    signal reached only some of them. Steps that end an epoch are left to the epoch-end checkpoint (a
    signal then stops the run after the first step of the next epoch), so every checkpoint is either at
    an epoch end or between two steps of an epoch, and a resumed run replays exactly the remaining
    batches (:mod:`sslib.data.sampling`). On SIGUSR1 inside a SLURM job
    with ``requeue``, rank 0 requeues the job (``scontrol requeue``, as Lightning's SLURM plug-in does)
    so it continues from the checkpoint; SIGTERM (preemption) is left to SLURM's own requeue policy.
    Stopping raises :class:`Preempted` on every rank after the checkpoint is written.
    """

    def __init__(self, path: str | Path, every_n_steps: int = 0, requeue: bool = True) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 0:
            raise ConfigError(f"checkpoint.every_n_steps must be an integer >= 0, got {every_n_steps!r}")
        self.path, self.every_n_steps, self.requeue = Path(path), every_n_steps, requeue
        self.received = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the step-boundary checkpoint
        self.received = int(signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Installed after Lightning's own handlers (registered when fit starts), which they replace
        # while training runs; teardown puts them back.
        for signum in STOP_SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals cannot be handled here
                break

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        signum = self.received
        if world_size() > 1:  # one integer per step (a GPU sync; Lightning's own SIGTERM check does one too)
            signum = int(all_reduce(torch.tensor([signum], device=pl_module.device), op="max").item())
        if batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch-end evaluation and checkpoint follow; a signal is handled after the next step
        if signum or (self.every_n_steps and trainer.global_step % self.every_n_steps == 0):
            trainer.save_checkpoint(self.path, weights_only=False)
        if signum:
            self._stop(trainer, signum)

    def _stop(self, trainer: L.Trainer, signum: int) -> None:
        job = slurm_job_id()
        if self.requeue and signum == signal.SIGUSR1 and job and trainer.is_global_zero:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            rank_zero_info(
                f"scontrol requeue {job}: " + ("done" if done.returncode == 0 else done.stderr.strip())
            )
        raise Preempted(signum, trainer.global_step, self.path, trainer.global_rank)
