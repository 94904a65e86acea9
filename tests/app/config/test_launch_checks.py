"""Bad multi-process settings are one-line errors (exit status 2) before any model is built."""

from __future__ import annotations

import os

import pytest
import torch

from sslib.app import methods
from sslib.app.cli import pretrain_main
from sslib.app.train import _device_ids


@pytest.fixture
def no_model(monkeypatch):
    """Building a model fails loudly: the checks must come first."""

    def build(*args, **kwargs):
        raise AssertionError("a model was built before the launch settings were checked")

    monkeypatch.setattr(methods, "build", build)


CPUS, GPUS = os.cpu_count() or 1, torch.cuda.device_count()
CASES = {
    "unknown strategy": (
        ["trainer.strategy=dpp"],
        "trainer.strategy 'dpp' is not supported; allowed: auto, ddp",
    ),
    "too many CPU processes": (
        ["trainer.accelerator=cpu", f"trainer.devices={CPUS + 1}"],
        f"trainer.devices={CPUS + 1} asks for more devices than the {CPUS} CPU cores visible",
    ),
    "too many GPUs": (
        ["trainer.accelerator=gpu", f"trainer.devices={GPUS + 1}"],
        f"asks for more devices than the {GPUS} GPUs visible to trainer.accelerator=gpu",
    ),
    "a GPU id that is not there": (
        ["trainer.accelerator=gpu", f"trainer.devices=[{GPUS}]"],
        "more devices than",
    ),
    "GPUs asked of a machine without": (
        ["trainer.devices=8"],
        "trainer.devices=8 asks for more devices than the 1 device (no GPU) visible to trainer.accelerator=auto; "
        "set trainer.accelerator=cpu for CPU processes",
    ),
    "no devices": (["trainer.devices=0"], "trainer.devices=0 is not a count >= 1, -1, auto or a list of ids"),
    "CPU device ids": (
        ["trainer.accelerator=cpu", "trainer.devices=[0,1]"],
        "is not a count >= 1, -1 or auto",
    ),
    "unknown accelerator": (
        ["trainer.accelerator=tpuu"],
        "trainer.accelerator 'tpuu' is not one of auto, cpu",
    ),
    "no nodes": (["trainer.num_nodes=0"], "trainer.num_nodes must be an integer >= 1, got 0"),
    "batch larger than a rank's share": (
        ["trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=1000"],
        "data.batch_size 1000 (per device) exceeds the 718 training images of each of the 2 processes",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_launch_settings_are_one_line_errors_before_the_model(
    case, no_model, capsys, tmp_path, monkeypatch
):
    overrides, message = CASES[case]
    if case == "batch larger than a rank's share":
        monkeypatch.setattr(os, "cpu_count", lambda: 8)  # two CPU processes whatever this machine has
    if case == "GPUs asked of a machine without":
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code = pretrain_main([*overrides, f"run_dir={tmp_path / 'run'}", "baseline_eval=false"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize(
    ("devices", "ids"),
    [(2, [0, 1]), ("2", [0, 1]), ("0,3", [0, 3]), ([1, 2], [1, 2]), (-1, [0, 1, 2]), ("auto", [0, 1, 2])],
)
def test_device_forms(devices, ids):
    assert _device_ids(devices, available=3) == ids


@pytest.mark.parametrize("devices", [0, -2, "x", [0, 0], [], True, 1.5])
def test_device_forms_that_are_not(devices):
    assert _device_ids(devices, available=3) is None


@pytest.mark.parametrize(("name", "value"), [("WORLD_SIZE", "8"), ("SLURM_STEP_NUM_TASKS", "4")])
def test_evaluation_tools_refuse_several_processes(name, value, monkeypatch, capsys):
    """torchrun or srun would run the same evaluation in every process: one line instead."""
    from sslib.app.eval.cli import knn_main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv(name, value)
    assert knn_main(["--ckpt", "missing.ckpt"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: the evaluation tools run in one process on one device but were started as {value} processes "
        "(torchrun or srun); start them with python (choose the device with --device)"
    )
