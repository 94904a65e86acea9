"""What ``resume=auto`` continues: a run given more epochs trains them on the schedules of its new length,
a moved run folder (or dataset) is the same run, other settings are refused with the one line that names
them and the route that continues the weights with them (``resume=<run_dir>/checkpoints/last.ckpt``),
and a run resumed mid-epoch shows that epoch and its length in the progress bar."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch

from sslib.app.callbacks import StepMetricsBar
from sslib.app.checkpoint import load_checkpoint, trained_epochs
from sslib.app.cli import pretrain_main
from sslib.app.config import compose
from sslib.optim.schedules import warmup_cosine

BATCH = 16
SHORT = [  # every run's settings but its number of steps per epoch
    "+trainer.limit_val_batches=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "baseline_eval=false",
    f"data.batch_size={BATCH}",
    "data.global_crops.size=16",
    "method.num_prototypes=20",
    "method.projector_dims=[32,16]",
    "optim.warmup_epochs=0",
    "optim.weight_decay=1e-4",
    "optim.final_weight_decay=1e-3",
]
TINY = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", *SHORT]  # 2 steps per epoch
CKPT = "checkpoints/last.ckpt"


class GroupRecorder(L.Callback):
    """The step and the first parameter group's lr, weight decay and momentum used by each training step."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float, float, float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int):
        group = trainer.optimizers[0].param_groups[0]
        self.steps.append((trainer.global_step, group["lr"], group["weight_decay"], group["momentum"]))


def peak_lr(lr: float | None = None) -> float:
    """The peak lr of the tiny runs (``optim.lr`` of their recipe), or of base lr ``lr``."""
    return (lr or compose(TINY).optim.lr) * BATCH / 256  # optim.scale_lr


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished one-epoch run (copy it before training it further)."""
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert pretrain_main([*TINY, f"run_dir={run_dir}"]) == 0
    return run_dir


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_more_epochs_continue_a_finished_run_on_the_schedules_of_the_new_length(
    finished, tmp_path, capfd, caplog
):
    run_dir = copy_run(finished, tmp_path / "run")
    recorder = GroupRecorder()
    with caplog.at_level(logging.INFO):
        assert pretrain_main([*TINY, "trainer.max_epochs=2", f"run_dir={run_dir}"], callbacks=[recorder]) == 0
    assert "continuing after step 2 (epoch 1) with trainer.max_epochs=2 (was 1)" in caplog.text
    assert "on the schedule of a 2-epoch run" in caplog.text
    assert [step for step, *_ in recorder.steps] == [2, 3]  # one more epoch, not the first one again
    assert trained_epochs(load_checkpoint(run_dir / CKPT)) == 2

    # The 4-step cosines at step 2, half-way (the 2-step ones had ended: lr 0, weight decay at its final value).
    _, lr, weight_decay, _ = recorder.steps[0]
    assert lr == pytest.approx(peak_lr() * warmup_cosine(2, 4, 0, 1.0))
    assert weight_decay == pytest.approx(1e-4 * warmup_cosine(2, 4, 0, 1.0, final_value=10.0))
    assert lr > 0 and weight_decay < 1e-3

    # Run again with the new length: finished, as any run with its settings unchanged.
    assert pretrain_main([*TINY, "trainer.max_epochs=2", f"run_dir={run_dir}"]) == 0
    assert capfd.readouterr().out.strip().splitlines()[-1].startswith("already finished (2 epochs)")


def test_other_settings_are_refused_naming_them_and_the_route_that_continues_with_them(
    finished, tmp_path, capfd
):
    run_dir = copy_run(finished, tmp_path / "run")
    changed = ["optim.lr=0.5", "optim.momentum=0.8"]
    capfd.readouterr()
    assert pretrain_main([*TINY, *changed, "trainer.max_epochs=2", f"run_dir={run_dir}"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "holds a run with a different config (optim.lr, optim.momentum)" in err
    assert f"use resume={run_dir / CKPT};" in err and "trainer.max_epochs" not in err

    # The route it names: the checkpoint's weights and position, trained on with the new settings.
    recorder = GroupRecorder()
    route = [*TINY, *changed, "trainer.max_epochs=2", f"run_dir={run_dir}", f"resume={run_dir / CKPT}"]
    assert pretrain_main(route, callbacks=[recorder]) == 0
    step, lr, _, momentum = recorder.steps[0]
    assert step == 2 and momentum == 0.8
    assert lr == pytest.approx(peak_lr(0.5) * warmup_cosine(2, 4, 0, 1.0))


def test_a_moved_run_folder_with_its_data_elsewhere_is_the_same_run(finished, tmp_path, capfd):
    moved = copy_run(finished, tmp_path / "elsewhere" / "moved")
    capfd.readouterr()
    assert pretrain_main([*TINY, f"run_dir={moved}", f"data.root={tmp_path / 'data'}"]) == 0
    assert capfd.readouterr().out.strip().splitlines()[-1].startswith("already finished (1 epoch)")


class CrashAt(L.Callback):
    """Raises after training step ``step`` (after the run's own callbacks have saved it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


class BarReader(L.Callback):
    """The progress bar's description, total and position when the first training step starts."""

    def __init__(self) -> None:
        self.seen: tuple[str, int | float | None, int] | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int):
        if self.seen is None:
            bar = next(c for c in trainer.callbacks if isinstance(c, StepMetricsBar)).train_progress_bar
            self.seen = (bar.desc, bar.total, bar.n)


def test_a_run_resumed_mid_epoch_shows_the_epoch_its_length_and_the_batches_done(tmp_path):
    run = [
        *SHORT,
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=5",
        "checkpoint.every_n_steps=2",
        "trainer.enable_progress_bar=true",
        f"run_dir={tmp_path / 'run'}",
    ]
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain_main(run, callbacks=[CrashAt(step=4)])  # after saving step 4: 4 of the epoch's 5 batches
    assert torch.load(tmp_path / "run" / CKPT, weights_only=True)["global_step"] == 4
    reader = BarReader()
    assert pretrain_main(run, callbacks=[reader]) == 0
    assert reader.seen is not None
    desc, total, done = reader.seen
    assert desc.startswith("Epoch 0") and total == 5 and done == 4
