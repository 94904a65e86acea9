"""Spies and callbacks that record what a training run did, for the methods' tests: each call of a loss
function, each EMA update, the closed form the momentum of those updates must follow, and the indices a
training loader fed each epoch."""

from __future__ import annotations

import importlib
import math

import lightning as L
import torch
from torch import nn


def _detached(arg):
    """A tensor or a list of tensors detached (graph-free copies to keep), anything else as it is."""
    if torch.is_tensor(arg):
        return arg.detach()
    if isinstance(arg, (list, tuple)):
        return [_detached(a) for a in arg]
    return arg


class LossSpy:
    """Stands in for a loss function of a method module: records each call's arguments and value.

    Install it with :meth:`install`.
    """

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, []

    @classmethod
    def install(cls, monkeypatch, target: str) -> LossSpy:
        """A spy in place of the function at dotted path ``target``, where the method module looks it up."""
        module, name = target.rsplit(".", 1)
        spy = cls(getattr(importlib.import_module(module), name))
        monkeypatch.setattr(target, spy)
        return spy

    def __call__(self, *args):
        value = self.fn(*args)
        self.calls.append(([_detached(a) for a in args], value.detach()))
        return value


def momentum_closed_form(step: int, total_steps: int, base: float, final: float) -> float:
    """BYOL's tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2 with 1 generalised to ``final``, written
    as base + (final - base)(1 - cos(pi t / T)) / 2 (MIRA ``train.py`` lines 397-399), held from T on."""
    t = min(step, total_steps)
    return base + (final - base) * (1 - math.cos(math.pi * t / total_steps)) / 2


def _params(module: nn.Module, n: int = 256) -> list[torch.Tensor]:
    """The first ``n`` entries of every parameter (a ResNet's whole weights, 4 copies a step, would be slow)."""
    return [p.detach().flatten()[:n].clone() for p in module.parameters()]


class EMAProbe(L.Callback):
    """Records every EMA update of a run: ``(global_step, teacher before, student, teacher after)``, each
    a list of the first entries of every parameter.

    The module updates its teacher right after the optimiser step (``optimizer_step``), so
    ``on_before_optimizer_step`` sees the teacher before the update and ``on_train_batch_end`` the
    student after its step and the teacher after the update.
    """

    def __init__(self) -> None:
        self.updates: list[tuple[int, list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]] = []
        self._before: list[torch.Tensor] | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._before = _params(pl_module.teacher)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        student = pl_module.ssl_modules()
        parts = nn.ModuleDict({k: student[k] for k in pl_module.teacher})
        assert self._before is not None
        self.updates.append((trainer.global_step, self._before, _params(parts), _params(pl_module.teacher)))
        self._before = None


def assert_updates_follow_the_ramp(
    probe: EMAProbe, total_steps: int, base: float, final: float, offset: int = 0
) -> None:
    """The update after optimiser step k (k = 1..T, Lightning's ``global_step`` then) used momentum
    m = cosine_ramp(k - 1 + offset, T): theta_t <- m theta_t + (1 - m) theta_s, to float32 rounding.

    ``offset=0`` is DINO's convention (``main_dino.py`` line 348: after iteration k - 1, m[k - 1]);
    ``offset=1`` is MIRA's (``train.py`` lines 351, 397-399, 437: the update before the forward of
    step index k, after k steps, uses m(k)). The check also asserts the teacher moved enough for the
    other convention to fail it.
    """
    assert [k for k, *_ in probe.updates] == list(range(1, total_steps + 1))
    atol, margin = 1e-6, 0.0
    for k, before, student, after in probe.updates:
        step = k - 1 + offset
        m = momentum_closed_form(step, total_steps, base, final)
        other = step + 1 if offset == 0 else step - 1
        off_by_one = abs(m - momentum_closed_form(other, total_steps, base, final))
        for t0, s, t1 in zip(before, student, after, strict=True):
            torch.testing.assert_close(t1, m * t0 + (1 - m) * s, rtol=0, atol=atol)
            margin = max(margin, off_by_one * float((s - t0).abs().max()))
    assert margin > 100 * atol


class IndexRecorder(L.LightningModule):
    """Trains one weight on the first crop's mean and records each epoch's sample indices: what a
    training loader fed Lightning, epoch by epoch (``batch = (crops, labels, indices)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.indices: list[list[int]] = []

    def on_train_epoch_start(self) -> None:
        self.indices.append([])

    def training_step(self, batch, batch_idx):
        crops, _, indices = batch
        self.indices[-1] += indices.tolist()
        return (self.weight * crops[0].mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit_recording(datamodule: L.LightningDataModule, epochs: int = 2) -> tuple[IndexRecorder, L.Trainer]:
    """An :class:`IndexRecorder` trained ``epochs`` epochs on ``datamodule``'s training loader (CPU, no
    validation, logs or checkpoints), and its trainer."""
    model = IndexRecorder()
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=datamodule)
    return model, trainer
