"""``scripts/export.py`` on checkpoints written by real ``sslib.app.train.pretrain`` runs: epochs trained, the
last online metrics, and weights that load into a plain torchvision ResNet."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn
from torchvision import models

from sslib.app import zoo
from sslib.app.checkpoint import load_backbone, trained_epochs
from sslib.app.config import compose
from sslib.app.train import pretrain
from sslib.app.zoo.cli import export_main
from sslib.app.zoo.manifest import Entry, entry_from_dict
from tests.app.methods.test_online_eval import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

SHORT = ["+trainer.limit_train_batches=1", "+trainer.limit_val_batches=2"]  # 1 step, 32-image kNN per epoch


def run(run_dir: Path, *overrides: str) -> tuple[Path, dict[str, float]]:
    """Pre-train a tiny run in ``run_dir`` -> (its last.ckpt, the metrics ``pretrain`` returned)."""
    results = pretrain(compose([*TINY, *SHORT, f"run_dir={run_dir}", *overrides]))
    return run_dir / "checkpoints" / "last.ckpt", results


def export(ckpt: Path, out: Path, capsys) -> Entry:
    capsys.readouterr()  # drop what training printed (Lightning's model summary)
    assert export_main([str(ckpt), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert f"wrote {out} (sha256 " in captured.err
    return entry_from_dict(yaml.safe_load(captured.out)[0], "exported entry")


def test_export_of_a_real_run_counts_its_epochs_and_keeps_its_online_metrics(tmp_path, capsys):
    ckpt, results = run(tmp_path / "run", "trainer.max_epochs=2")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1  # Lightning's 0-based counter at the save
    out = tmp_path / "published" / "model.safetensors"
    entry = export(ckpt, out, capsys)
    assert (entry.name, entry.method, entry.dataset, entry.epochs) == (
        "mira-resnet18-digits-2ep",
        "mira",
        "digits",
        2,
    )
    assert entry.metrics == {
        "digits_online_knn_top1": round(results["val/knn_top1"], 2),
        "digits_online_probe_top1": round(results["val/probe_top1"], 2),
    }
    assert "after epoch 2: weighted kNN top-1 (k=20, T=0.07, bank fraction 1.0)" in entry.metrics_source
    assert entry.backbone_kwargs == {"cifar": True, "stem_padding": 1, "zero_init_residual": False}
    assert (
        entry.sha256 == hashlib.sha256(out.read_bytes()).hexdigest() and entry.url == out.resolve().as_uri()
    )

    trained, _ = load_backbone(ckpt)
    plain = models.resnet18()  # torchvision's own ResNet-18 with the CIFAR stem, nothing from sslib
    plain.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    plain.maxpool, plain.fc = nn.Identity(), nn.Identity()
    plain.load_state_dict(load_file(out))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = trained(x)
        assert torch.equal(plain.eval()(x), expected)
        assert torch.equal(
            zoo.load(entry, cache_dir=tmp_path / "cache")(x), expected
        )  # the entry works as is


def test_evaluation_every_n_epochs_checkpoints_every_epoch_and_exports_the_last_evaluation(tmp_path, capsys):
    ckpt, results = run(tmp_path / "run", "trainer.max_epochs=3", "online_eval.every_n_epochs=2")
    state = torch.load(ckpt, weights_only=True)
    assert trained_epochs(state) == 3  # saved after epoch 3 although it ran no evaluation
    assert state["online_eval"] == {
        "epochs": 2,
        **{k: pytest.approx(results[f"val/{k}"]) for k in ("knn_top1", "knn_top5", "probe_top1")},
    }
    entry = export(ckpt, tmp_path / "model.safetensors", capsys)
    assert entry.epochs == 3 and "after epoch 2:" in entry.metrics_source
    assert entry.metrics["digits_online_knn_top1"] == round(results["val/knn_top1"], 2)


def test_export_without_an_online_evaluation_has_no_metrics(tmp_path, capsys):
    ckpt, _ = run(tmp_path / "run", "trainer.max_epochs=1", "online_eval.every_n_epochs=2")
    entry = export(ckpt, tmp_path / "model.safetensors", capsys)
    assert (entry.epochs, entry.metrics, entry.metrics_source) == (1, {}, "")


def test_export_refuses_a_non_sslib_checkpoint(tmp_path, capsys):
    torch.save({"model": {}}, tmp_path / "other.ckpt")
    assert export_main([str(tmp_path / "other.ckpt")]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("is not an sslib training checkpoint (no state_dict / config)")
    )
