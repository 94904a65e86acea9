"""Preemption and kills lose at most the steps since the last checkpoint: real training subprocesses are
stopped by SIGTERM, SIGUSR1 or SIGKILL (also in the middle of a checkpoint write), and ``resume=auto``
ends with the weights of the uninterrupted run, having replayed exactly the remaining batches."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslib.app.checkpoint import load_checkpoint
from tests.helpers import ROOT

PROBE = ROOT / "tests" / "helpers" / "pretrain_probe.py"
EPOCHS, BATCHES = 2, 5  # two epochs of five steps
TINY = [
    f"trainer.max_epochs={EPOCHS}",
    f"+trainer.limit_train_batches={BATCHES}",
    "trainer.accelerator=cpu",
    "data.batch_size=32",
    "data.global_crops.size=8",
    "method.num_prototypes=20",
    "method.projector_dims=[64,32]",
    "trainer.enable_progress_bar=false",
    "baseline_eval=false",
]


def train(run_dir: Path, *options: str, env: dict | None = None, extra: tuple[str, ...] = ()):
    """``tests/helpers/pretrain_probe.py`` (scripts/pretrain.py with probes) on the tiny run in ``run_dir``."""
    cmd = [sys.executable, str(PROBE), *options, *TINY, *extra, f"run_dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=run_dir.parent, env=env)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


def batches(record: Path) -> list[tuple[int, list[int]]]:
    return [
        (epoch, idx.tolist()) for epoch, idx in torch.load(record / "rank0.pt", weights_only=True)["batches"]
    ]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict, list]:
    run_dir = tmp_path_factory.mktemp("full") / "run"
    out = train(run_dir, "--record", str(run_dir / "rec"))
    assert out.returncode == 0, out.stderr[-3000:]
    return weights(run_dir), batches(run_dir / "rec")


@pytest.mark.parametrize("name", ["TERM", "USR1", "INT"])
def test_signal_mid_epoch_saves_stops_and_resumes_to_the_same_weights(name, uninterrupted, tmp_path):
    full_weights, full_batches = uninterrupted
    run_dir = tmp_path / "run"
    # SIGUSR1 inside a SLURM job also requeues it: a stand-in scontrol records how it was called.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "scontrol.args"}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}

    stopped = train(run_dir, "--record", str(tmp_path / "a"), "--signal", f"2:{name}", env=env)
    signum = getattr(signal, f"SIG{name}")
    assert stopped.returncode == 128 + signum, stopped.stderr[-3000:]
    assert f"stopped by SIG{name} after step 3" in stopped.stderr
    first = batches(tmp_path / "a")
    assert len(first) == 3 and not list((run_dir / "checkpoints").glob("*.tmp"))
    requeued = tmp_path / "scontrol.args"
    assert (requeued.read_text().split() == ["requeue", "4242"]) if name == "USR1" else not requeued.exists()

    resumed = train(run_dir, "--record", str(tmp_path / "b"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert first + batches(tmp_path / "b") == full_batches  # the remaining batches, in order
    assert_same_weights(weights(run_dir), full_weights)


def test_sigkill_mid_epoch_and_mid_write_resume_from_the_last_complete_checkpoint(uninterrupted, tmp_path):
    full_weights, full_batches = uninterrupted
    run_dir = tmp_path / "run"
    every = ("checkpoint.every_n_steps=2",)
    # Killed during its second checkpoint write (after step 4): step 2's checkpoint must stay intact.
    killed = train(run_dir, "--kill-in-write", "2", extra=every)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    partial = list((run_dir / "checkpoints").glob(".last.ckpt.*.tmp"))
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 2

    # Resumed, then SIGKILLed mid-epoch (after step 7 of 10, past the checkpoint of step 6).
    again = train(run_dir, "--signal", "7:KILL", extra=every)
    assert again.returncode == -signal.SIGKILL, again.stderr[-3000:]
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # the stale partial write is cleared
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6

    final = train(run_dir, "--record", str(tmp_path / "c"), extra=every)
    assert final.returncode == 0, final.stderr[-3000:]
    assert batches(tmp_path / "c") == full_batches[6:]
    assert_same_weights(weights(run_dir), full_weights)
