"""A run's folder: its files are readable by others as the umask allows (shared clusters), and a run_dir
that cannot be written is one line (exit status 2) before any work."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sslib.app import run_checks
from sslib.app.cli import pretrain_main
from sslib.app.zoo.cli import export_main

TINY_RUN = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
    "baseline_eval=false",
    "data.batch_size=16",
    "data.global_crops.size=16",
]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_runs_files_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        run_dir = tmp_path / "run"
        assert pretrain_main([*TINY_RUN, f"run_dir={run_dir}"]) == 0
        out = tmp_path / "backbone.safetensors"
        assert export_main([str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out)]) == 0
    finally:
        os.umask(previous)
    for path in (run_dir / "checkpoints" / "last.ckpt", run_dir / "config.yaml", out):
        assert mode(path) == 0o644, path


def refused(run_dir: Path, capsys) -> str:
    """The one line ``pretrain`` prints for ``run_dir`` (it must stop with status 2, before any work)."""
    assert pretrain_main([*TINY_RUN, f"run_dir={run_dir}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


def test_a_run_dir_under_a_file_or_that_is_a_file_is_one_line(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("")
    under = file / "runs" / "a"
    assert (
        refused(under, capsys)
        == f"error: run_dir {under} is under {file}, which is a file: set run_dir=... to a folder"
    )
    assert refused(file, capsys).startswith(f"error: run_dir {file} is a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a folder without write permission")
def test_a_read_only_run_dir_is_one_line(tmp_path, capsys):
    read_only = tmp_path / "shared"
    read_only.mkdir(mode=0o555)
    assert refused(read_only, capsys).startswith(f"error: run_dir {read_only} is not writable by this user")
    err = refused(read_only / "run", capsys)
    assert err.startswith(
        f"error: run_dir {read_only / 'run'} cannot be created: {read_only} is not writable"
    )


def test_a_run_dir_this_user_cannot_write_is_one_line(tmp_path, capsys, monkeypatch):
    """As the read-only case, also where the tests run as root (who may write anywhere): a folder that
    os.access reports not writable, e.g. on a read-only mount."""
    shared = tmp_path / "shared"
    shared.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        run_checks.os, "access", lambda path, how: Path(path) != shared and real_access(path, how)
    )
    err = refused(shared / "run", capsys)
    assert err.startswith(f"error: run_dir {shared / 'run'} cannot be created: {shared} is not writable")
