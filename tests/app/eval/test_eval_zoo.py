"""``zoo:<name>`` checkpoints in the evaluation tools: downloaded from a local server, verified, converted
from their published format and evaluated as an sslib run's backbone would be."""

from __future__ import annotations

import hashlib
import re

import pytest
import torch
from torchvision import models

from sslib.app import zoo
from sslib.app.eval.cli import knn_main
from sslib.app.eval.sources import load_any_backbone, resolve
from tests.app.zoo.test_hub import served, tiny_entry  # noqa: F401  (the fixture and the entry of the hub tests)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_zoo_checkpoint_is_downloaded_verified_converted_and_evaluated(
    served,  # noqa: F811
    tmp_path,
    monkeypatch,
    capsys,
):
    folder, base, _ = served
    torch.manual_seed(0)
    published = models.resnet18().state_dict()
    torch.save(published, folder / "resnet18.pth")
    sha = hashlib.sha256((folder / "resnet18.pth").read_bytes()).hexdigest()
    entry = tiny_entry(f"{base}/resnet18.pth", sha)
    monkeypatch.setattr(zoo, "get", lambda name: entry if name == entry.name else pytest.fail(name))
    monkeypatch.setenv("SSLIB_ZOO_CACHE", str(tmp_path / "cache"))

    path, source = resolve(f"zoo:{entry.name}")
    assert path == tmp_path / "cache" / entry.filename and (source.fmt, source.arch) == (
        "torchvision",
        "resnet18",
    )
    backbone = load_any_backbone(path, source)
    loaded = backbone.state_dict()
    assert set(loaded) == {k for k in published if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], published[k]) for k in loaded)

    monkeypatch.chdir(tmp_path)
    assert knn_main(["--ckpt", f"zoo:{entry.name}", "--fractions", "1", "--device", "cpu"]) == 0
    via_zoo = capsys.readouterr().out
    assert via_zoo.startswith(  # no run config to take the dataset from: the defaults, and it says so
        "data: digits (default: the checkpoint stores no run config), root: data (default), "
        "image size: 32 (default)\n"
    )
    assert re.search(r"^\| 100% \| 20 \| 0.07 \| \d+\.\d\d \| \d+\.\d\d \|$", via_zoo, re.M), via_zoo
    # the same weights given as a file with their format give the same table
    args = ["--ckpt", str(folder / "resnet18.pth"), "--format", "torchvision", "--arch", "resnet18"]
    assert knn_main([*args, "--fractions", "1", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == via_zoo
