"""The command line: help, config printing, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sslib.app.cli import pretrain_main
from sslib.errors import ConfigError, MissingFileError, SslibError
from tests.helpers import ROOT


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pretrain.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=300,
    )


def test_help_lists_groups_and_options(capsys):
    assert pretrain_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert (
        "method    barlow, byol, deepclusterv2, dino, mira, simclr, swav" in out
        and "labeler   dino, mira, nearest, sinkhorn" in out
    )


def test_cfg_prints_the_composed_recipe(capsys):
    assert (
        pretrain_main(["method=mira", "backbone=resnet18", "data=cifar100", "labeler=sinkhorn", "--cfg"]) == 0
    )
    out = capsys.readouterr().out
    assert "max_epochs: 1000" in out and "name: sinkhorn" in out and "name: cifar100" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["method=byol2"],
            "error: unknown method 'byol2'; available: barlow, byol, deepclusterv2, dino, mira, simclr, swav",
        ),
        (["labeler=knn"], "error: unknown labeler 'knn'; available: dino, mira, nearest, sinkhorn"),
        (["backbone=vgg"], "error: unknown backbone 'vgg'; available: resnet18, resnet50, timm"),
        (["data=mnist"], "error: unknown data 'mnist'"),
        (["labeler=mira", "labeler.beta=1.0"], "error: labeler.beta must be in [0, 1), got 1.0"),
        (["data=folder", "data.root=/no/such/folder"], "/no/such/folder"),
        (["data=cifar10", "data.download=false", "data.root=/no/cifar"], "/no/cifar"),
        (["backbone.name=nonet"], "error: unknown backbone 'nonet'"),
        (["resume=/no/last.ckpt"], "error: resume checkpoint '/no/last.ckpt' does not exist"),
    ],
)
def test_bad_input_exits_with_one_clear_line(tmp_path, capsys, args, message):
    code = pretrain_main([*args, f"run_dir={tmp_path}", "trainer.accelerator=cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "Traceback" not in err, err  # one line, no traceback
    assert message in err


def test_script_reports_errors_the_same_way(tmp_path):
    out = run("method=byol2", cwd=tmp_path)
    assert (
        out.returncode == 2
        and out.stderr.strip()
        == "error: unknown method 'byol2'; available: barlow, byol, deepclusterv2, dino, mira, simclr, swav"
    )


def test_a_diverging_run_exits_with_one_clear_line_and_status_1(tmp_path, capsys):
    args = ["method.num_prototypes=10", "method.projector_dims=[32,16]", "data.batch_size=16"]
    args += ["optim.lr=1e30", "optim.warmup_epochs=0", "baseline_eval=false", "trainer.max_epochs=1"]
    args += ["trainer.log_every_n_steps=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    code = pretrain_main([*args, f"run_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("error: training diverged: the loss was NaN or Inf at a step in ")
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()  # it diverged before the first save


@pytest.mark.parametrize("bug", [ValueError("an internal bug"), FileNotFoundError("an internal bug")])
def test_an_internal_error_keeps_its_traceback_where_bad_input_is_one_line(
    tmp_path, monkeypatch, capsys, bug
):
    """Only sslib's own error type is bad input (one line, status 2): a ValueError or FileNotFoundError
    raised inside training is a bug and reaches the caller with its traceback."""

    def broken(cfg, callbacks):
        raise bug

    monkeypatch.setattr("sslib.app.train.pretrain", broken)
    with pytest.raises(type(bug), match="an internal bug"):
        pretrain_main([f"run_dir={tmp_path}", "trainer.accelerator=cpu"])
    assert capsys.readouterr().err == ""

    def bad_input(cfg, callbacks):
        raise ConfigError("data.batch_size must be an integer >= 2, got 1")

    monkeypatch.setattr("sslib.app.train.pretrain", bad_input)
    assert pretrain_main([f"run_dir={tmp_path}", "trainer.accelerator=cpu"]) == 2
    assert capsys.readouterr().err == "error: data.batch_size must be an integer >= 2, got 1\n"

    def broken_compose(overrides):
        raise bug

    monkeypatch.setattr("sslib.app.cli.compose", broken_compose)  # a bug while composing: its own traceback
    with pytest.raises(type(bug), match="an internal bug"):
        pretrain_main([f"run_dir={tmp_path}"])
    assert issubclass(ConfigError, SslibError) and issubclass(ConfigError, ValueError)
    assert issubclass(MissingFileError, SslibError) and issubclass(MissingFileError, FileNotFoundError)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epoch=1", "trainer.max_epoch is not a key of the composed config; did you mean trainer.max_epochs=1?"),
        ("data.batchsize=4", "data.batchsize is not a key of the composed config; did you mean data.batch_size=4?"),
        ("trainer.deterministic=true", "trainer.deterministic is not a key of the composed config (to add it: +trainer.deterministic=true)"),
        ("method.nope=3", "method.nope is not a key of the composed config; method has: name, labeler, num_prototypes"),
    ],
)  # fmt: skip
def test_an_unknown_key_names_the_near_one_and_suggests_plus_only_where_the_target_takes_it(
    tmp_path, capsys, override, message
):
    assert pretrain_main([override, f"run_dir={tmp_path}", "--cfg"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {message}"), err
    assert ("+" in err) == override.startswith("trainer.deterministic")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.max_epochs=-1", "trainer.max_epochs must be an integer >= 1, got -1"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1, got 0"),
        ("data.batch_size=1", "data.batch_size must be an integer >= 2 (per device; BatchNorm needs two samples), got 1"),
        ("data.global_crops.n=1", "data.global_crops.n=1 with no local crops gives one view of each image"),
    ],
)  # fmt: skip
def test_a_run_that_cannot_train_stops_in_one_line_before_any_work(
    tmp_path, monkeypatch, capsys, override, message
):
    def no_work(*args, **kwargs):
        raise AssertionError("data were built before the config was checked")

    monkeypatch.setattr("sslib.app.train.SSLDataModule", no_work)
    assert pretrain_main([override, f"run_dir={tmp_path}", "trainer.accelerator=cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {message}"), err
    assert not (tmp_path / "checkpoints").exists()
