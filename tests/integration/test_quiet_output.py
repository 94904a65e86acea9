"""A run prints no warning its user cannot act on: no advertisement, no third-party deprecation, and
nothing about workers, pinned memory or the logging interval on a small machine and a small dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.data.test_datasets import make_tree
from tests.helpers import ROOT

TINY = [
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "data.global_crops.size=8",
    "method.projector_dims=[32,16]",
    "method.num_prototypes=10",
    "baseline_eval=false",
]
# what the noise says: Lightning's litlogger tip, torch's LeafSpec deprecation through Lightning's
# _pytree, the DataLoader's and Lightning's worker-count warnings, pin_memory without CUDA, and a
# logging interval longer than an epoch
NOISE = ("litlogger", "_pytree", "LeafSpec", "worker", "pin_memory", "log_every_n_steps")


def data_args(kind: str, root: Path) -> list[str]:
    if kind == "digits":
        return ["data.batch_size=32", "+trainer.limit_train_batches=2", "online_eval.bank_fraction=0.1"]
    make_tree(root, {"train": {"a": 8, "b": 8}, "val": {"a": 2, "b": 2}})  # 4 batches of 4
    return ["data=folder", f"data.root={root}", "data.batch_size=4"]


@pytest.mark.parametrize("kind", ["digits", "folder"])
def test_a_small_run_prints_no_warning_it_cannot_act_on(tmp_path, kind):
    args = [*TINY, *data_args(kind, tmp_path / "images"), f"run_dir={tmp_path / 'run'}"]
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "pretrain.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "online kNN top-1" in out.stdout
    noisy = [line for line in text.splitlines() if any(word in line for word in NOISE)]
    assert not noisy, "\n".join(noisy)
