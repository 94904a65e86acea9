"""End to end: the command line trains on the embedded digits, writes a usable run folder, and resumes."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import torch
import torchvision

from sslib.app.checkpoint import backbone_state_dict
from sslib.backbones.resnet import use_cifar_stem
from tests.helpers import ROOT

SMALL = [
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=3",
    "data.batch_size=32",
    "data.global_crops.size=16",
    "method.num_prototypes=50",
    "method.projector_dims=[256,256,64]",
    "trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=1",
]


def pretrain(run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "scripts" / "pretrain.py"), *SMALL, f"run_dir={run_dir}", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=run_dir.parent)


def test_cli_trains_mira_on_digits_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    out = pretrain(run_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    line = re.search(
        r"online kNN top-1 \(k=20, cosine\): ([\d.]+)% \(random-init backbone: ([\d.]+)%\)", out.stdout
    )
    assert line, out.stdout[-2000:]
    trained, baseline = float(line.group(1)), float(line.group(2))
    assert 10.0 < baseline <= 100.0 and 0.0 < trained <= 100.0  # both measured on the same val split

    # The run folder: resolved config, one CSV row of online kNN per epoch, an atomic last.ckpt.
    assert "name: mira" in (run_dir / "config.yaml").read_text()
    rows = list(csv.DictReader((run_dir / "logs" / "version_0" / "metrics.csv").open()))
    knn = [float(r["val/knn_top1"]) for r in rows if r.get("val/knn_top1")]
    assert (
        len(knn) == 3 and abs(knn[0] - baseline) < 6e-3 and abs(knn[-1] - trained) < 6e-3
    )  # baseline + 2 epochs
    assert any(r.get("labels/mutual_information") for r in rows)
    assert not list((run_dir / "checkpoints").glob("*.tmp"))

    # The checkpoint loads safely into a plain torchvision ResNet-18 (CIFAR stem, no fc).
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    model = torchvision.models.resnet18()
    use_cifar_stem(model)
    model.fc = torch.nn.Identity()
    model.load_state_dict(backbone_state_dict(ckpt))
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 512)

    # Running the same command again reports the finished run and its result instead of starting over.
    again = pretrain(run_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"already finished (2 epochs), nothing trained; online kNN top-1 (k=20, cosine): {trained:.2f}%"
        in again.stdout
    )
    assert "random-init backbone" not in again.stdout  # no fresh baseline: it is a resumption
