"""The command line on 2 CPU processes (gloo; Lightning launches the second one): ``trainer.accelerator=cpu
trainer.devices=2 trainer.strategy=ddp`` trains MIRA and BYOL on the embedded digits, writes the run folder
once, shards every epoch across the ranks, reports the same online kNN on both, and a 2-process run
stopped by SIGTERM resumes to the weights of the uninterrupted one."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslib.app.checkpoint import load_checkpoint
from sslib.app.datamodule import SSLDataModule
from tests.helpers import ROOT

PROBE = ROOT / "tests" / "helpers" / "pretrain_probe.py"
DDP = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
TINY = [
    "trainer.max_epochs=2",
    "data.batch_size=128",  # per device: 5 full batches of each rank's 718 images, then one of 78
    "data.drop_last=false",
    "data.global_crops.size=8",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]
METHODS = {
    "mira": ["method.num_prototypes=20", "method.projector_dims=[64,32]"],
    "byol": ["method=byol", "method.projector_dims=[64,32]", "method.predictor_dims=[64,32]"],
}


def train(run_dir: Path, method: str, *options: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(PROBE), *options, *DDP, *TINY, *METHODS[method], f"run_dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=run_dir.parent, env=env)


def ranks(record: Path) -> list[dict]:
    return [torch.load(record / f"rank{r}.pt", weights_only=True) for r in range(2)]


def epoch_indices(record: dict, epoch: int) -> list[int]:
    return [i for e, idx in record["batches"] if e == epoch for i in idx.tolist()]


@pytest.fixture(scope="module")
def n_train() -> int:
    data = SSLDataModule("digits", batch_size=1)
    data.setup()
    return len(data.train_set)


@pytest.fixture(scope="module")
def mira_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("mira") / "run"
    return run_dir, train(run_dir, "mira", "--record", str(run_dir.parent / "rec"))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_two_process_run_writes_one_run_folder_and_shards_every_epoch(method, mira_run, n_train, tmp_path):
    run_dir, out = mira_run if method == "mira" else (tmp_path / "run", None)
    out = out or train(run_dir, method, "--record", str(tmp_path / "rec"))
    assert out.returncode == 0, out.stderr[-3000:]
    # rank 0 alone reports and writes: one result line, one config, one metrics file, one checkpoint
    assert out.stdout.count("online kNN top-1") == 1, out.stdout[-2000:]
    assert (run_dir / "config.yaml").is_file()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert [p.relative_to(run_dir).as_posix() for p in (run_dir / "logs").rglob("*.csv")] == [
        "logs/version_0/metrics.csv"
    ]
    rows = list(csv.DictReader((run_dir / "logs" / "version_0" / "metrics.csv").open()))
    assert len([r for r in rows if r.get("val/knn_top1")]) == 3  # baseline + 2 epochs
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 2 * 6 and ckpt["hyper_parameters"]["cfg"]["trainer"]["devices"] == 2

    record = ranks(run_dir.parent / "rec" if method == "mira" else tmp_path / "rec")
    for epoch in range(2):
        shards = [epoch_indices(r, epoch) for r in record]
        assert [len(s) for s in shards] == [n_train // 2] * 2  # 6 batches each, the last one short
        assert not set(shards[0]) & set(shards[1])
        assert len(set(shards[0]) | set(shards[1])) == n_train - n_train % 2  # the epoch, but one image
    assert epoch_indices(record[0], 0) != epoch_indices(record[0], 1)  # reshuffled each epoch
    metrics = [r["metrics"] for r in record]
    assert metrics[0]["val/knn_top1"] == metrics[1]["val/knn_top1"]
    assert metrics[0]["val/probe_top1"] == metrics[1]["val/probe_top1"]
    assert f"{metrics[0]['val/knn_top1']:.2f}%" in out.stdout


def test_two_process_run_stopped_by_sigterm_resumes_to_the_same_weights(mira_run, tmp_path):
    full_dir, full = mira_run
    assert full.returncode == 0, full.stderr[-3000:]
    run_dir = tmp_path / "run"
    stopped = train(run_dir, "mira", "--record", str(tmp_path / "a"), "--signal", "7:TERM")  # rank 0 only
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert stopped.stderr.count("stopped by SIGTERM after step 8") == 1
    resumed = train(run_dir, "mira", "--record", str(tmp_path / "b"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for full_rank, a, b in zip(
        ranks(full_dir.parent / "rec"), ranks(tmp_path / "a"), ranks(tmp_path / "b"), strict=True
    ):
        assert [i.tolist() for _, i in a["batches"] + b["batches"]] == [
            i.tolist() for _, i in full_rank["batches"]
        ]
    done, expected = (
        load_checkpoint(d / "checkpoints" / "last.ckpt")["state_dict"] for d in (run_dir, full_dir)
    )
    for key in expected:
        assert torch.equal(done[key], expected[key]), key
