"""The sweep's launchers with the real engines: submitit's local executor running runs in parallel, and its
SLURM executor against fake ``sbatch``, ``srun``, ``squeue``, ``sacct`` and ``scancel`` that run the jobs on
this machine (:mod:`tests.app.ablate.fake_slurm`); restarts start only what is missing or failed."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
import torch

from sslib.app.ablate import runner
from sslib.app.ablate.cli import ablate_main
from sslib.app.ablate.plan import make_plan
from tests.app.ablate import fake_slurm
from tests.app.ablate.test_ablate import TINY

pytestmark = pytest.mark.usefixtures("one_thread")
# MIRA's digits recipe (no EMA teacher), three epochs of two steps
THREE_EPOCHS = [a for a in TINY if a != "recipe=null" and not a.startswith("trainer.max_epochs=")]
THREE_EPOCHS.append("trainer.max_epochs=3")


def records(out: Path) -> dict:
    return json.loads((out / "sweep.json").read_text())


def log_times(out: Path, job_id: str) -> tuple[datetime, datetime]:
    """When local job ``job_id`` started (submitit's first log line) and ended (its result file)."""
    first = (out / "jobs" / f"{job_id}_0_log.out").read_text().splitlines()[0]
    stamp = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\)", first)
    assert stamp, first
    ended = (out / "jobs" / f"{job_id}_0_result.pkl").stat().st_mtime
    return datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f"), datetime.fromtimestamp(ended)


def test_local_launcher_runs_seeds_in_parallel_processes_and_a_finished_sweep_trains_nothing(
    tmp_path, capsys
):
    out = tmp_path / "out"
    args = ["methods=[mira]", "seeds=[0,1]", "reference=random-init", *TINY, f"out={out}"]
    assert ablate_main([*args, "launcher=local", "launcher.parallel=2"]) == 0
    printed = capsys.readouterr().out
    saved = records(out)
    assert {record["launcher"] for record in saved.values()} == {"local"} and len(saved) == 4
    runs = [saved[f"mira-mira/seed{seed}"] for seed in (0, 1)]
    assert runs[0]["job_id"] != runs[1]["job_id"] and {run["slot"] for run in runs} == {0, 1}
    (start0, end0), (start1, end1) = (log_times(out, run["job_id"]) for run in runs)
    assert start0 < end1 and start1 < end0  # the two runs were alive at the same time

    rows = list(csv.DictReader((out / "ablation.csv").open()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [
        ("mira", "0"), ("mira", "1"), ("random-init", "0"), ("random-init", "1"),
    ]  # fmt: skip
    assert "| mira | mira | 2 | 1 |" in printed and "Difference to random-init" in printed

    before = sorted(p.name for p in (out / "jobs").iterdir())
    assert ablate_main([*args, "launcher=local", "launcher.parallel=2"]) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 4
    assert sorted(p.name for p in (out / "jobs").iterdir()) == before and records(out) == saved


@pytest.fixture
def slurm(tmp_path, monkeypatch) -> Path:
    """Fake SLURM commands first on PATH; their state in the returned folder."""
    state = tmp_path / "slurm"
    monkeypatch.setenv("FAKE_SLURM_DIR", str(state))
    monkeypatch.setenv("PATH", f"{fake_slurm.install(tmp_path)}:{os.environ['PATH']}")
    return state


def wait_for_jobs(timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while any(
        task["state"] in fake_slurm.LIVE
        for job in fake_slurm.jobs().values()
        for task in job["tasks"].values()
    ):
        assert time.monotonic() < deadline, fake_slurm.jobs()
        time.sleep(0.2)


SLURM_SETTINGS = [
    "launcher=slurm",
    "launcher.partition=gpu",
    "launcher.account=lab",
    "launcher.qos=high",
    "launcher.constraint=h100",
    "launcher.time=1-01:00:00",
    "launcher.nodes=2",
    "launcher.gpus_per_node=4",
    "launcher.cpus_per_task=6",
    "launcher.mem_gb=32",
    'launcher.setup=["module load cuda/12.4", "source ~/venv/bin/activate"]',
    "launcher.array_parallelism=1",
    "launcher.signal_delay_s=120",
]


def test_slurm_job_scripts_and_queued_runs_are_not_submitted_again(slurm, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SLURM_HOLD", "1")  # submitted jobs stay pending
    out = tmp_path / "out"
    args = ["methods=[mira]", "seeds=[0,1]", *TINY, f"out={out}", *SLURM_SETTINGS]
    assert (
        make_plan(args).runs[0].cfg.trainer.devices == 4
        and make_plan(args).runs[0].cfg.trainer.num_nodes == 2
    )
    assert ablate_main(args) == 0
    assert "random-init/seed0: submitted, SLURM job 1000_0" in capsys.readouterr().out
    [(baseline_id, baseline), (run_id, run)] = fake_slurm.jobs().items()
    shared = {
        "partition": "gpu", "account": "lab", "qos": "high", "constraint": "h100", "time": "1500",
        "cpus-per-task": "6", "mem": "32G", "array": "0-1%1", "signal": "USR1@120", "requeue": True,
    }  # fmt: skip
    assert run["directives"] == {
        **run["directives"],
        **shared,
        "nodes": "2",
        "ntasks-per-node": "4",
        "gpus-per-node": "4",
    }
    assert baseline["directives"] == {**baseline["directives"], **shared, "nodes": "1", "gpus-per-node": "1"}
    assert baseline["directives"]["ntasks-per-node"] == "1"
    assert "module load cuda/12.4\nsource ~/venv/bin/activate\n" in run["script"] and "srun" in run["script"]

    assert ablate_main([*args, "--status"]) == 0
    status = capsys.readouterr().out
    assert status.count("| queued | slurm ") == 4 and "4 queued of 4 runs" in status

    assert ablate_main(args) == 0  # nothing new: every run is queued
    assert "mira-mira/seed1: queued (slurm job 1001_1), not started again" in capsys.readouterr().out
    assert len(fake_slurm.jobs()) == 2

    fake_slurm.scancel([f"{run_id}_1"])  # one run cancelled before it started: failed, submitted again
    assert ablate_main([*args, "--status"]) == 0
    assert re.search(
        r"\| mira-mira/seed1 \| failed \| slurm 1001_1 \| .* \| CANCELLED: slurm job 1001_1 ended",
        capsys.readouterr().out,
    )
    assert ablate_main(args) == 0
    assert list(fake_slurm.jobs()) == [baseline_id, run_id, "1002"]
    assert "mira-mira/seed1: submitted, SLURM job 1002" in capsys.readouterr().out


def test_slurm_job_trains_and_a_cancelled_job_resumes_to_the_uninterrupted_result(
    slurm, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "out"
    args = ["methods=[mira]", *THREE_EPOCHS, f"out={out}", "launcher=slurm", "launcher.gpus_per_node=0"]
    args += ["launcher.cpus_per_task=1"]  # one torch thread, as this test process
    assert ablate_main(args) == 0
    run_dir = out / "mira-mira"
    deadline = time.monotonic() + 300
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():  # the first of three epochs is saved
        assert time.monotonic() < deadline and (out / "jobs").is_dir()
        time.sleep(0.05)
    fake_slurm.scancel([records(out)["mira-mira"]["job_id"]])  # SIGTERM: saves last.ckpt, exits 143
    wait_for_jobs()
    job = fake_slurm.jobs()[records(out)["mira-mira"]["job_id"]]
    assert job["tasks"]["0"] == {**job["tasks"]["0"], "state": "CANCELLED", "exit_code": 143}
    capsys.readouterr()
    assert ablate_main([*args, "--status"]) == 0
    status = capsys.readouterr().out
    assert re.search(
        r"\| mira-mira \| failed \| .* \| CANCELLED: stopped by SIGTERM after step \d+; .* saved", status
    ), status
    assert "| random-init | finished |" in status

    assert ablate_main(args) == 0  # only the stopped run is submitted again, and resumes
    assert len(fake_slurm.jobs()) == 3
    reference = tmp_path / "reference"  # the same run, uninterrupted, in this process meanwhile
    assert ablate_main(["methods=[mira]", *THREE_EPOCHS, f"out={reference}"]) == 0
    wait_for_jobs()
    capsys.readouterr()
    assert ablate_main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished, skipped") == 2 and len(fake_slurm.jobs()) == 3  # nothing trained again
    assert (
        "resuming after epoch"
        in (out / "jobs" / f"{records(out)['mira-mira']['job_id']}_0_log.out").read_text()
    )

    resumed, uninterrupted = (
        json.loads((d / "mira-mira" / runner.RESULT_FILE).read_text()) for d in (out, reference)
    )
    assert {k: v for k, v in resumed["result"].items() if k != "wall_time_s"} == {
        k: v for k, v in uninterrupted["result"].items() if k != "wall_time_s"
    }
    weights = [
        torch.load(d / "mira-mira" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for d in (out, reference)
    ]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
